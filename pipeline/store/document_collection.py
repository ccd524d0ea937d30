"""Documents with ``_metadata``: creation, soft delete and live reads.

Every document carries the seed's ``_metadata`` block. Deletes are soft
(``isDeleted`` with who and when) and every read through
:class:`DocumentCollection` skips deleted documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from pipeline.errors import NotFound

Document = dict[str, Any]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, at millisecond precision.

    BSON dates keep milliseconds; truncating here makes a value read back
    from the database equal to the one written.
    """
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_metadata(actor: str | None, now: datetime | None = None) -> Document:
    """The ``_metadata`` block of a new document.

    Args:
        actor: Who creates it (``admin``, ``client:<id>``, ``system``).
        now: Creation time; the current time by default.

    Returns:
        The block.
    """
    now = now or utcnow()
    return {
        "isDeleted": False,
        "createdAt": now,
        "updatedAt": now,
        "deletedAt": None,
        "createdBy": actor,
        "updatedBy": actor,
        "deletedBy": None,
    }


def not_deleted(query: Mapping[str, Any] | None = None) -> Document:
    """``query`` restricted to documents that are not soft-deleted."""
    return {**(query or {}), "_metadata.isDeleted": False}


def parse_object_id(value: str | ObjectId, resource: str) -> ObjectId:
    """Parse an id from a URL or body.

    Args:
        value: The id as given.
        resource: What it names, for the error.

    Returns:
        The ObjectId.

    Raises:
        NotFound: ``value`` is not a valid id (so it names nothing).
    """
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise NotFound(resource, value) from None


class DocumentCollection:
    """The seed's database helpers, bound to one collection.

    Reads skip deleted documents; writes maintain ``_metadata``.
    """

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.collection.name

    async def create(
        self, document: Mapping[str, Any], *, actor: str | None
    ) -> Document:
        """Insert a document with fresh ``_metadata`` (``db_create``).

        Args:
            document: The fields; an ``_id`` is generated if absent.
            actor: Who creates it.

        Returns:
            The stored document, ``_id`` included.
        """
        stored = {
            "_id": ObjectId(),
            **document,
            "_metadata": new_metadata(actor),
        }
        await self.collection.insert_one(stored)
        return stored

    async def read(
        self,
        query: Mapping[str, Any] | None = None,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
        skip: int = 0,
        projection: Mapping[str, Any] | None = None,
    ) -> list[Document]:
        """Live documents matching ``query`` (``db_read``)."""
        cursor = self.collection.find(not_deleted(query), projection)
        if sort:
            cursor = cursor.sort(list(sort))
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit)
        return await cursor.to_list()

    async def find_one(
        self,
        query: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
    ) -> Document | None:
        """The first live document matching ``query`` (``db_find_one``)."""
        return await self.collection.find_one(not_deleted(query), projection)

    async def get(
        self, identifier: str | ObjectId, *, resource: str | None = None
    ) -> Document:
        """A live document by id (``get_document_by_id``).

        Raises:
            NotFound: No live document has that id.
        """
        resource = resource or self.name
        object_id = parse_object_id(identifier, resource)
        document = await self.find_one({"_id": object_id})
        if document is None:
            raise NotFound(resource, identifier)
        return document

    async def update(
        self,
        query: Mapping[str, Any],
        changes: Mapping[str, Any],
        *,
        actor: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> Document | None:
        """Set fields on the first live match and return it (``db_update``).

        Args:
            query: Which document.
            changes: Fields to ``$set``.
            actor: Who changes it.
            extra: Other update operators (``$inc``, ``$unset``, ...).

        Returns:
            The updated document, or None when nothing matched.
        """
        update: Document = {
            "$set": {
                **changes,
                "_metadata.updatedAt": utcnow(),
                "_metadata.updatedBy": actor,
            },
            **(extra or {}),
        }
        return await self.collection.find_one_and_update(
            not_deleted(query), update, return_document=ReturnDocument.AFTER
        )

    async def soft_delete(
        self, query: Mapping[str, Any], *, actor: str | None
    ) -> bool:
        """Mark the first live match deleted (``db_delete``).

        Returns:
            Whether a document was deleted.
        """
        now = utcnow()
        result = await self.collection.update_one(
            not_deleted(query),
            {
                "$set": {
                    "_metadata.isDeleted": True,
                    "_metadata.deletedAt": now,
                    "_metadata.deletedBy": actor,
                    "_metadata.updatedAt": now,
                    "_metadata.updatedBy": actor,
                }
            },
        )
        return result.modified_count == 1
