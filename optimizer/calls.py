"""A run's model calls: stored answer first, else one call through a worker.

:class:`StoredModelCall` is the :class:`~optimizer.protocols.ModelCall`
of a run. It keys each request by its content (model, messages,
temperature, token cap), returns the stored answer when there is one,
and otherwise calls the model through the cluster's provider worker,
which holds the model's concurrency, rpm and tpm limits for batch items
and runs alike and retries as it does for chat calls. The answer is
stored before it is returned, so it is never paid for twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping

from optimizer.answers import AnswerStore
from optimizer.records import Answer
from pipeline.catalog import Pricing
from providers.base import Completion, CompletionRequest
from providers.errors import ProviderError

#: Calls a provider worker: ``(model name, request) -> completion``.
Complete = Callable[[str, CompletionRequest], Awaitable[Completion]]


def request_key(model: str, request: CompletionRequest) -> str:
    """A stable key of what is asked (same request, same key)."""
    body = json.dumps(
        {
            "model": model,
            "messages": [[m.role, m.content] for m in request.messages],
            "temperature": request.temperature,
            "maxTokens": request.max_tokens,
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class StoredModelCall:
    """Model calls of one run, each answered at most once.

    Args:
        run_id: The run the answers belong to.
        answers: Where answers are kept.
        complete: Makes one call (with the pipeline's retries).
        pricing: Catalog pricing of the run's models, by name.
    """

    def __init__(
        self,
        run_id: str,
        answers: AnswerStore,
        complete: Complete,
        pricing: Mapping[str, Pricing],
    ) -> None:
        self._run_id = run_id
        self._answers = answers
        self._complete = complete
        self._pricing = dict(pricing)
        self._lookup: (
            tuple[set[str], asyncio.Future[dict[str, Answer]]] | None
        ) = None
        # Keeps the pending read tasks referenced until they finish.
        self._tasks: set[asyncio.Future[None]] = set()

    async def __call__(self, model: str, request: CompletionRequest) -> Answer:
        """The stored answer, or a new one (stored first)."""
        key = request_key(model, request)
        stored = await self._stored(key)
        if stored is not None:
            return stored
        return await self.fresh(model, request, key)

    async def _stored(self, key: str) -> Answer | None:
        """The stored answer of ``key``, read with the others asked now.

        Calls started together (an evaluation gathers one per example)
        share one read of the store instead of one read each.
        """
        if self._lookup is None:
            keys: set[str] = set()
            future = asyncio.get_running_loop().create_future()
            self._lookup = (keys, future)
            # Runs after the calls already scheduled have added their keys.
            asyncio.get_running_loop().call_soon(self._start_read)
        keys, future = self._lookup
        keys.add(key)
        found: dict[str, Answer] = await asyncio.shield(future)
        return found.get(key)

    def _start_read(self) -> None:
        task = asyncio.ensure_future(self._read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        assert self._lookup is not None
        keys, future = self._lookup
        self._lookup = None
        try:
            future.set_result(await self._answers.get_many(self._run_id, keys))
        except Exception as error:
            future.set_exception(error)

    async def fresh(
        self, model: str, request: CompletionRequest, key: str
    ) -> Answer:
        """Call the model now; store and return its answer.

        A provider error that outlived the retries is returned as a
        failed answer (not stored: a resumed run tries again).
        """
        try:
            completion = await self._complete(model, request)
        except ProviderError as error:
            return Answer(key, None, error=f"{error.kind}: {error.message}")
        except Exception as error:
            # The worker itself failed (its actor restarting, the model
            # gone from the catalog): still one example's failure.
            return Answer(key, None, error=f"worker: {error!r}")
        usage = completion.usage
        pricing = self._pricing.get(model, Pricing())
        answer = Answer(
            key,
            completion.text,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=pricing.cost(usage.input_tokens, usage.output_tokens),
        )
        await self._answers.put(self._run_id, answer)
        return answer
