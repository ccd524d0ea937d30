"""A throughput workload and what one run of it measured.

A workload is a fixed provider latency, a per-model concurrency limit,
a number of models and of items; its ideal rate is ``models x C / L``.
Every peer (Metasync, the asyncio script, Ray Data LLM) runs the same
prompts against the same fake server and reports a :class:`RunResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workload:
    """One row of the benchmark.

    Attributes:
        key: Short name (``a``, ``b``); model names start with it.
        latency_ms: The fake server's delay before each answer.
        concurrency: Calls in flight per model (``maxConcurrency``).
        models: How many models the items are spread over.
        items: How many items.
    """

    key: str
    latency_ms: float
    concurrency: int
    models: int
    items: int

    @property
    def ideal(self) -> float:
        """Items per second if every model ran C calls at all times."""
        return self.models * self.concurrency / (self.latency_ms / 1000)

    @property
    def model_names(self) -> list[str]:
        """The upstream model ids (also the catalog names)."""
        return [f"tp-{self.key}-{i}" for i in range(self.models)]

    def prompts(self) -> list[tuple[str, str]]:
        """``(model, user content)`` of every item, models round robin."""
        names = self.model_names
        return [
            (names[i % len(names)], f"item {i}") for i in range(self.items)
        ]

    def describe(self) -> str:
        """One line: the parameters and the ideal rate."""
        return (
            f"workload {self.key}: L = {self.latency_ms:g} ms, C = "
            f"{self.concurrency}, {self.models} model(s), {self.items:,} "
            f"items; ideal {self.ideal:,.0f}/s"
        )


WORKLOADS = {
    "a": Workload("a", latency_ms=50, concurrency=64, models=1, items=8000),
    "b": Workload("b", latency_ms=200, concurrency=32, models=2, items=4000),
}


@dataclass
class RunResult:
    """What one run of one peer on one workload measured.

    Attributes:
        peer: Who ran it.
        workload: Which workload.
        done: Items that finished successfully.
        seconds: Wall time of the run (how each peer times it is in its
            module).
        peaks: Most calls in flight at once per model (fake server).
        notes: Further figures, already formatted.
    """

    peer: str
    workload: Workload
    done: int
    seconds: float
    peaks: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        """The rate as a fraction of the ideal."""
        return self.rate / self.workload.ideal
