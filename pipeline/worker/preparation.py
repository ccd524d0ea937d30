"""Before a call: an item's system prompt, and an answer already cached.

Items of saved prompts carry the prompt's id and version; the text is
read once (per claim, for the versions not in the bounded
:class:`PromptCache`). Items of ``cache: true`` jobs at temperature 0
are looked up in the result cache, per client unless the model's cache
is shared (``sharedCache``), and answered from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import ObjectId

from pipeline.logging import get_logger
from pipeline.states import Status
from pipeline.worker.backlog import JobTrack
from pipeline.worker.item_store import Item, ItemStore, Outcome
from pipeline.worker.prompt_cache import PromptCache
from pipeline.worker.requests import result_cache_key
from pipeline.worker.served_model import ServedModels

S = Status
log = get_logger(__name__)


class Preparation:
    """Resolves prompts and serves cached answers.

    Args:
        items: The worker's item store (prompts and the result cache).
        served: The worker's models (whether a cache is shared).
        jobs: The worker's tracked jobs (``cache``, client).
        prompts: The prompt texts already read.
    """

    def __init__(
        self,
        items: ItemStore,
        served: ServedModels,
        jobs: Mapping[ObjectId, JobTrack],
        prompts: PromptCache,
    ) -> None:
        self._items = items
        self._served = served
        self._jobs = jobs
        self.prompts = prompts

    async def prepare(
        self, items: list[Item]
    ) -> tuple[list[Item], list[Outcome]]:
        """Resolve the items' prompts and look up cached answers.

        Returns:
            The items to call the provider for, and the outcomes of
            those answered from the cache.
        """
        await self._resolve_prompts(items)
        cacheable = {
            self.cache_key(item): item
            for item in items
            if self.cacheable(item)
        }
        hits = (
            await self._items.cached_results(list(cacheable))
            if cacheable
            else {}
        )
        runnable: list[Item] = []
        cached: list[Outcome] = []
        for item in items:
            key = self.cache_key(item) if self.cacheable(item) else None
            if key is not None and key in hits:
                result = {**hits[key], "cached": True, "cost": 0.0}
                cached.append(
                    Outcome(item=item, status=S.PROCESSED, result=result)
                )
            else:
                runnable.append(item)
        return runnable, cached

    async def _resolve_prompts(self, items: list[Item]) -> None:
        missing = self.prompts.missing(
            (i["promptId"], i["promptVersion"])
            for i in items
            if i.get("promptId") is not None
        )
        # Read now: used for this batch even if the cache drops some.
        read = await self._items.system_prompts(missing) if missing else {}
        self.prompts.update(read)
        for item in items:
            if item.get("promptId") is not None:
                version = (item["promptId"], item["promptVersion"])
                text = read.get(version) or self.prompts.get(version)
                item["systemPrompt"] = text

    def cacheable(self, item: Item) -> bool:
        """Whether an item's answer is looked up in, and kept in, the cache."""
        track = self._jobs.get(item["jobId"])
        cache = track.cache if track else item.get("cache", False)
        return bool(cache) and item.get("temperature") == 0

    def cache_key(self, item: Item) -> str:
        """The item's key in the result cache: its client's, or shared.

        A model's cache is shared only when an admin set ``sharedCache``.
        """
        model = self._served.models.get(item["model"])
        shared = model is not None and model.shared_cache
        return result_cache_key(item, shared)

    async def remember(self, outcomes: list[Outcome]) -> None:
        """Keep the fresh answers of cacheable items (best effort)."""
        entries: dict[str, dict[str, Any]] = {
            self.cache_key(outcome.item): outcome.result
            for outcome in outcomes
            if outcome.result
            and not outcome.result.get("cached")
            and self.cacheable(outcome.item)
        }
        if not entries:
            return
        try:
            await self._items.store_cached(entries)
        except Exception as error:
            log.warning("cache_store_failed", error=str(error))
