"""An in-memory service for the batch driver: jobs, keys, results.

It keeps what a real service keeps across the driver's crashes (jobs
by idempotency key, item results) and counts what a provider would be
paid for, so tests can check that nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pipeline.batch.backend import PromptInfo, ResultItem
from pipeline.errors import Conflict, NotFound, QuotaExceeded
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.validation import ItemSpec
from pipeline.states import Status


class Crash(Exception):
    """The driver's process dies here (raised by a trap)."""


@dataclass
class FakeJob:
    id: str
    key: str | None
    fingerprint: str
    specs: list[ItemSpec]
    items: list[ResultItem]
    canceled: bool = False
    consumed: bool = False


@dataclass
class FakeJobs:
    """A client's jobs; items finish ``step`` at a time per results call."""

    models: set[str] = field(default_factory=lambda: {"m"})
    prompts: dict[tuple[str, int | None], PromptInfo] = field(
        default_factory=dict
    )
    step: int = 1_000_000
    fail: set[str] = field(default_factory=set)
    #: Submissions refused with a 429 before one is accepted.
    quota_refusals: int = 0
    #: Raised by every submission (a job the service refuses).
    refusal: Exception | None = None
    max_job_items: int | None = None
    #: Consume calls answered "still PROCESSING" before one succeeds.
    settle_lag: int = 0
    target: str = "fake"
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submissions: int = 0
    #: Items "sent to the provider" (each must be one, once).
    calls: list[str] = field(default_factory=list)
    #: Calls of a method name after which :class:`Crash` is raised.
    traps: dict[str, int] = field(default_factory=dict)

    def _trap(self, name: str) -> None:
        if name in self.traps:
            self.traps[name] -= 1
            if self.traps[name] < 0:
                del self.traps[name]
                raise Crash(name)

    async def model_names(self) -> set[str]:
        return set(self.models)

    async def prompt(
        self, prompt_id: str, version: int | None
    ) -> PromptInfo | None:
        return self.prompts.get((prompt_id, version))

    async def submit(self, items: list[ItemSpec], options: JobOptions) -> str:
        self.submissions += 1
        self._trap("submit_before")
        if self.refusal is not None:
            raise self.refusal
        if self.quota_refusals:
            self.quota_refusals -= 1
            raise QuotaExceeded("too many pending items", retry_after=0.01)
        fingerprint = repr((items, replace(options, idempotency_key=None)))
        for job in self.jobs.values():
            if job.key is not None and job.key == options.idempotency_key:
                if job.fingerprint != fingerprint:
                    raise Conflict("key used for another job")
                return job.id
        job_id = f"job{len(self.jobs)}"
        self.jobs[job_id] = FakeJob(
            job_id,
            options.idempotency_key,
            fingerprint,
            list(items),
            [
                ResultItem(
                    id=f"{job_id}-{seq}",
                    custom_id=spec.custom_id,
                    model=spec.model,
                    status=Status.PENDING,
                )
                for seq, spec in enumerate(items)
            ],
        )
        # The answer is lost when the process dies right after the
        # service stored the job.
        self._trap("submit_after")
        return job_id

    def work(self, job: FakeJob, n: int) -> None:
        """Run up to ``n`` pending items of a job."""
        for seq, item in enumerate(job.items):
            if n <= 0:
                return
            if item.status != Status.PENDING:
                continue
            if job.canceled:
                job.items[seq] = replace(item, status=Status.CANCELED)
                continue
            self.calls.append(item.id)
            spec = job.specs[seq]
            if item.custom_id in self.fail:
                job.items[seq] = replace(
                    item,
                    status=Status.FAILED,
                    error_type="permanent",
                    error_message="refused by the provider",
                )
            else:
                job.items[seq] = replace(
                    item,
                    status=Status.PROCESSED,
                    text=f"echo: {spec.user_content}",
                    finish_reason="stop",
                    input_tokens=3,
                    output_tokens=4,
                    cost=0.5,
                )
            n -= 1

    async def results(
        self, job_id: str, cursor: int, limit: int
    ) -> list[ResultItem]:
        self._trap("results")
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound("job", job_id)
        self.work(job, self.step)
        return job.items[cursor : cursor + limit]

    async def find_job(self, key: str) -> str | None:
        for job in self.jobs.values():
            if job.key == key:
                return job.id
        return None

    async def cancel(self, job_id: str) -> None:
        self.jobs[job_id].canceled = True

    async def consume(self, job_id: str) -> str:
        self._trap("consume")
        job = self.jobs[job_id]
        if self.settle_lag:
            # Its counters have not caught up with its items yet.
            self.settle_lag -= 1
            return Status.PROCESSING
        if job.canceled:
            return Status.CANCELED
        job.consumed = True
        return Status.CONSUMED

    async def close(self) -> None:
        return None
