"""Stored model answers of a run: what makes a resumed run free.

Every answer a run receives is written here before it is scored, keyed
by the run and the request, so asking the same question again (a
resumed run, a candidate re-screened) reads it back instead of paying
for it. Only answers count: a call that failed for good is not stored
as reusable, so a resumed run tries it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

from pymongo.errors import DuplicateKeyError

from optimizer.records import Answer
from pipeline.store import Store, safe_operation

ANSWERS = "run_answers"


class AnswerStore(Protocol):
    """Where a run's answers are kept."""

    async def get_many(
        self, run_id: str, keys: Iterable[str]
    ) -> dict[str, Answer]:
        """The stored answers among ``keys``."""
        ...

    async def put(self, run_id: str, answer: Answer) -> None:
        """Keep one answer (a second write of a key is ignored)."""
        ...


class MemoryAnswerStore:
    """Answers in a dict (tests, and runs that need no resume)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}

    async def get_many(
        self, run_id: str, keys: Iterable[str]
    ) -> dict[str, Answer]:
        """The stored answers among ``keys``."""
        found = {}
        for key in keys:
            answer = self.answers.get((run_id, key))
            if answer is not None:
                found[key] = Answer.from_doc(answer.to_doc())
        return found

    async def put(self, run_id: str, answer: Answer) -> None:
        """Keep one answer."""
        self.answers.setdefault((run_id, answer.key), answer)


class MongoAnswerStore:
    """Answers in the ``run_answers`` collection, addressed by ``_id``.

    The ``_id`` is ``<run id>:<request key>``: reads are one ``$in`` by
    ``_id`` and writes plain inserts, the shapes that stay fast on every
    MongoDB server (no secondary index to maintain).
    """

    def __init__(self, store: Store) -> None:
        self._answers = store.raw(ANSWERS)

    async def get_many(
        self, run_id: str, keys: Iterable[str]
    ) -> dict[str, Answer]:
        """The stored answers among ``keys``."""
        ids = [f"{run_id}:{key}" for key in keys]
        if not ids:
            return {}

        async def read() -> list[dict[str, Any]]:
            cursor = self._answers.find({"_id": {"$in": ids}})
            return [doc async for doc in cursor]

        docs = await safe_operation(read, what="read run answers")
        return {doc["key"]: Answer.from_doc(doc) for doc in docs}

    async def put(self, run_id: str, answer: Answer) -> None:
        """Keep one answer; an answer already stored wins."""
        doc = {"_id": f"{run_id}:{answer.key}", "runId": run_id}
        doc.update(answer.to_doc())

        async def insert() -> None:
            # A second write of a key (a retried task) keeps the first.
            with contextlib.suppress(DuplicateKeyError):
                await self._answers.insert_one(doc)

        await safe_operation(insert, what="store a run answer")
