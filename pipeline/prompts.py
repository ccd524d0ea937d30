"""Prompts: a client's reusable system prompts and user templates.

A prompt is versioned: an update stores a new version and old versions
stay readable, so jobs pinned to a version render the same text forever.
The ``prompts`` document holds the latest version; ``prompt_versions``
holds every version, including the latest.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from pipeline.errors import Conflict, NotFound
from pipeline.logging import BusinessLogger
from pipeline.store import Store, parse_object_id
from pipeline.store.document_collection import Document, utcnow
from pipeline.store.keyset import KeysetPage, newest_first
from pipeline.templates import placeholders

business = BusinessLogger()

_VERSIONED = ("name", "systemPrompt", "userTemplate", "tags")


class PromptService:
    """Client-owned prompt CRUD with versions."""

    def __init__(self, store: Store) -> None:
        self._prompts = store.documents("prompts")
        self._versions = store.documents("prompt_versions")

    async def create(
        self, client_id: ObjectId, fields: dict[str, Any]
    ) -> Document:
        """Store a new prompt as version 1."""
        actor = f"client:{client_id}"
        content = _content(fields)
        prompt = await self._prompts.create(
            {"clientId": client_id, **content, "version": 1}, actor=actor
        )
        await self._versions.create(
            {"promptId": prompt["_id"], "version": 1, **content},
            actor=actor,
        )
        business.log_operation(
            "prompts", "create", prompt_id=str(prompt["_id"])
        )
        return prompt

    async def list(
        self, client_id: ObjectId, *, limit: int, cursor: str | None
    ) -> KeysetPage:
        """The client's live prompts, newest first, after ``cursor``."""
        return await newest_first(
            self._prompts, {"clientId": client_id}, limit=limit, cursor=cursor
        )

    async def get(self, client_id: ObjectId, prompt_id: str) -> Document:
        """The latest version of one of the client's prompts.

        Raises:
            NotFound: No such prompt, or it is another client's.
        """
        object_id = parse_object_id(prompt_id, "prompt")
        prompt = await self._prompts.find_one(
            {"_id": object_id, "clientId": client_id}
        )
        if prompt is None:
            raise NotFound("prompt", prompt_id)
        return prompt

    async def get_version(
        self, client_id: ObjectId, prompt_id: str, version: int
    ) -> Document:
        """One version of one of the client's prompts.

        Raises:
            NotFound: No such prompt or version.
        """
        prompt = await self.get(client_id, prompt_id)
        document = await self._versions.find_one(
            {"promptId": prompt["_id"], "version": version}
        )
        if document is None:
            raise NotFound("prompt version", f"{prompt_id}/{version}")
        return {
            **document,
            "_id": prompt["_id"],
            "clientId": prompt["clientId"],
        }

    async def versions_of(
        self, client_id: ObjectId, keys: set[tuple[ObjectId, int | None]]
    ) -> dict[tuple[ObjectId, int | None], Document]:
        """Resolve many (prompt id, version or None for latest) at once.

        Only the client's live prompts are found; missing keys are absent
        from the result.
        """
        ids = sorted({prompt_id for prompt_id, _ in keys})
        prompts = {
            p["_id"]: p
            for p in await self._prompts.read(
                {"_id": {"$in": ids}, "clientId": client_id}
            )
        }
        found: dict[tuple[ObjectId, int | None], Document] = {}
        pinned: dict[ObjectId, set[int]] = {}
        for prompt_id, version in keys:
            prompt = prompts.get(prompt_id)
            if prompt is None:
                continue
            if version is None or version == prompt["version"]:
                found[(prompt_id, version)] = prompt
            else:
                pinned.setdefault(prompt_id, set()).add(version)
        for prompt_id, wanted in pinned.items():
            documents = await self._versions.read(
                {"promptId": prompt_id, "version": {"$in": sorted(wanted)}}
            )
            for document in documents:
                found[(prompt_id, document["version"])] = {
                    **document,
                    "_id": prompt_id,
                }
        return found

    async def update(
        self, client_id: ObjectId, prompt_id: str, fields: dict[str, Any]
    ) -> Document:
        """Store a new version; the previous ones stay readable.

        Raises:
            NotFound: No such prompt.
            Conflict: Another update made the same version concurrently.
        """
        prompt = await self.get(client_id, prompt_id)
        actor = f"client:{client_id}"
        content = _content(fields)
        version = prompt["version"] + 1
        try:
            await self._versions.create(
                {"promptId": prompt["_id"], "version": version, **content},
                actor=actor,
            )
        except DuplicateKeyError:
            raise Conflict(
                "the prompt was updated concurrently; retry"
            ) from None
        updated = await self._prompts.update(
            {"_id": prompt["_id"], "version": prompt["version"]},
            {**content, "version": version},
            actor=actor,
        )
        if updated is None:
            raise Conflict("the prompt was updated concurrently; retry")
        business.log_operation(
            "prompts", "update", prompt_id=prompt_id, version=version
        )
        return updated

    async def delete(self, client_id: ObjectId, prompt_id: str) -> None:
        """Soft-delete a prompt (jobs already submitted keep their text).

        Raises:
            NotFound: No such prompt.
        """
        prompt = await self.get(client_id, prompt_id)
        await self._prompts.soft_delete(
            {"_id": prompt["_id"]}, actor=f"client:{client_id}"
        )
        business.log_operation("prompts", "delete", prompt_id=prompt_id)


def _content(fields: dict[str, Any]) -> dict[str, Any]:
    content = {key: fields.get(key) for key in _VERSIONED}
    content["tags"] = list(content["tags"] or [])
    content["variables"] = placeholders(content["userTemplate"] or "")
    content["contentUpdatedAt"] = utcnow()
    return content
