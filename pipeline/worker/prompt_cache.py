"""The worker's cache of system prompts, bounded (least recently used).

Prompt versions never change once written, so a version read once may be
reused for every later item; but a worker lives for days and clients may
create any number of prompts, so only the most recently used
:data:`PROMPT_CACHE_ENTRIES` versions are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from bson import ObjectId

#: Prompt versions a worker keeps in memory.
PROMPT_CACHE_ENTRIES = 1024

#: A prompt version: ``(promptId, version)``.
PromptVersion = tuple[ObjectId, int]


class PromptCache:
    """System prompts by version, the least recently used dropped first."""

    def __init__(self, max_entries: int = PROMPT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a prompt cache holds at least one entry")
        self.max_entries = max_entries
        self._texts: OrderedDict[PromptVersion, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, version: object) -> bool:
        return version in self._texts

    def missing(self, versions: Iterable[PromptVersion]) -> set[PromptVersion]:
        """The versions not cached (to read from the database)."""
        return {v for v in versions if v not in self._texts}

    def get(self, version: PromptVersion) -> str | None:
        """A cached prompt (now the most recently used), or None."""
        text = self._texts.get(version)
        if text is not None:
            self._texts.move_to_end(version)
        return text

    def update(self, texts: Mapping[PromptVersion, str]) -> None:
        """Cache prompts read, dropping the least recently used."""
        for version, text in texts.items():
            self._texts[version] = text
            self._texts.move_to_end(version)
        while len(self._texts) > self.max_entries:
            self._texts.popitem(last=False)
