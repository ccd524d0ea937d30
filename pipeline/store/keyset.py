"""Keyset paging, newest first, for every listing.

A page is read after the last ``_id`` of the previous one, so its cost
does not grow with the page number (a skip reads and drops every earlier
document) and documents inserted or deleted between pages neither repeat
nor go missing. The cursor is opaque to callers; today it is the last
``_id`` in hex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from pipeline.errors import ValidationFailed
from pipeline.store.document_collection import Document, DocumentCollection


@dataclass(frozen=True)
class KeysetPage:
    """Documents of one page and the cursor of the next (None: last)."""

    documents: list[Document]
    next_cursor: str | None


def decode_cursor(cursor: str) -> ObjectId:
    """The ``_id`` a cursor stands for.

    Raises:
        ValidationFailed: Not a cursor a listing returned (a 400).
    """
    if not ObjectId.is_valid(cursor):
        raise ValidationFailed.single(
            "cursor", "is not a cursor returned by this listing"
        )
    return ObjectId(cursor)


async def newest_first(
    collection: DocumentCollection,
    query: Mapping[str, Any],
    *,
    limit: int,
    cursor: str | None,
    projection: Mapping[str, Any] | None = None,
) -> KeysetPage:
    """Live documents matching ``query``, newest first, after ``cursor``.

    One more document than the page is read, so the cursor is None
    exactly when nothing follows.
    """
    bounded = dict(query)
    if cursor is not None:
        bounded["_id"] = {"$lt": decode_cursor(cursor)}
    documents = await collection.read(
        bounded, sort=[("_id", -1)], limit=limit + 1, projection=projection
    )
    if len(documents) <= limit:
        return KeysetPage(documents, None)
    page = documents[:limit]
    return KeysetPage(page, str(page[-1]["_id"]))
