"""The resumable batch driver: validate, submit in chunks, write once.

A run of :meth:`BatchDriver.run`:

1. finds the batch's state beside the output, or validates the whole
   input (nothing is submitted unless every line is good) and creates
   it with the chunk plan;
2. keeps a few chunks submitted as jobs (``active_jobs``), each with an
   idempotency key made of the input's hash and the chunk's position;
3. pages each submitted job's results from its cursor and appends the
   finished ones at the head of the page to the output, then commits
   the cursor and the output's length in the state file;
4. marks each job whose results are all written consumed.

Interrupted anywhere, the same call continues: the state names the
jobs (a submission whose answer was lost is found again by its key)
and how much of the output counts. Nothing is submitted, paid for or
written twice. Memory holds counters, offsets and one chunk's items
at a time, never the whole input.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

from pipeline.batch.backend import JobsBackend, PromptInfo, ResultItem
from pipeline.batch.chunks import Chunk, read_lines
from pipeline.batch.errors import (
    BatchError,
    InvalidInput,
    LineProblem,
    StateMismatch,
)
from pipeline.batch.formats import parse_line
from pipeline.batch.output import OutputFile, encode_line, output_line
from pipeline.batch.records import (
    BatchOptions,
    BatchResult,
    CancelReport,
    OnProgress,
    Progress,
)
from pipeline.batch.scan import ChunkLimits, file_sha256, scan_input
from pipeline.batch.state import (
    BatchState,
    Totals,
    load_state,
    output_lock,
    save_state,
    state_path,
)
from pipeline.errors import (
    Conflict,
    MetasyncError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unavailable,
    ValidationFailed,
)
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.validation import ItemSpec
from pipeline.states import Status

#: Results asked per page: the first page of a chunk, and the most.
PAGE_MIN_ITEMS, PAGE_MAX_ITEMS = 100, 1000
#: Seconds the service may stay unreachable before the run gives up.
OUTAGE_LIMIT_S = 300.0
#: Seconds between submission attempts while the service is down.
OUTAGE_RETRY_S = 5.0
#: Seconds a written job may take to settle before it is left as is.
SETTLE_LIMIT_S = 60.0
#: Seconds to wait for a prompt lookup during validation.
PROMPT_LOOKUP_TIMEOUT_S = 60.0

_UNSETTLED = (None, Status.PENDING, Status.PROCESSING)
_ITEM_FIELD = re.compile(r"^items\[(\d+)\]\.?(.*)$")


class _Stopped(Exception):
    """Validation stops because the run was interrupted."""


class BatchDriver:
    """Runs one input file as jobs and writes its results file."""

    def __init__(
        self,
        backend: JobsBackend,
        input_path: Path,
        output_path: Path,
        options: BatchOptions | None = None,
        on_progress: OnProgress | None = None,
    ) -> None:
        self._backend = backend
        self._input = input_path
        self._output_path = output_path
        self._state_path = state_path(output_path)
        self._options = options or BatchOptions()
        self._on_progress = on_progress
        self._output = OutputFile(output_path)
        self._page_items: dict[int, int] = {}
        self._submit_after = 0.0
        self._outage_since: float | None = None
        self._settle_by: dict[int, float] = {}

    async def run(self) -> BatchResult:
        """Run the batch to its end, or continue it.

        Returns:
            What was written.

        Raises:
            InvalidInput: Bad lines (nothing submitted), or a job the
                service refused (naming the lines).
            StateMismatch: The output belongs to another batch.
            BatchError: Another reason the batch cannot go on.
            MetasyncError: The service refused the key, for example.
        """
        with output_lock(self._output_path):
            state, resumed = await self._open_state()
            self._output.open(state.output_bytes)
            try:
                await self._drive(state)
            finally:
                self._output.close()
        return BatchResult(
            output=self._output_path,
            items=state.items,
            totals=state.totals,
            job_ids=[c.job_id for c in state.chunks if c.job_id],
            resumed=resumed,
            canceled=state.canceled,
        )

    async def cancel(self) -> CancelReport:
        """Cancel the batch's jobs; a later run writes what they finished.

        Raises:
            BatchError: There is no batch writing this output.
        """
        with output_lock(self._output_path):
            state = load_state(self._state_path)
            if state is None:
                raise BatchError(
                    f"no batch is writing {self._output_path} (no "
                    f"{self._state_path.name}): nothing to cancel"
                )
            self._check_target(state)
            unrecorded = next(
                (c for c in state.chunks if c.job_id is None), None
            )
            if unrecorded is not None and not state.canceled:
                # Interrupted while submitting: the job may exist.
                unrecorded.job_id = await self._backend.find_job(
                    unrecorded.key
                )
            canceled = 0
            for chunk in state.chunks:
                if chunk.job_id is not None and not chunk.done:
                    await self._backend.cancel(chunk.job_id)
                    canceled += 1
            state.canceled = True
            save_state(self._state_path, state)
        return CancelReport(
            jobs_canceled=canceled,
            items_unsubmitted=sum(
                c.items for c in state.chunks if c.job_id is None
            ),
        )

    async def _open_state(self) -> tuple[BatchState, bool]:
        state = load_state(self._state_path)
        if state is not None:
            self._check_target(state)
            sha256 = await asyncio.to_thread(file_sha256, self._input)
            if sha256 != state.input_sha256:
                raise StateMismatch(
                    f"{self._input} is not the input this batch started "
                    f"with: write its results to a new --output"
                )
            return state, True
        if self._output_path.exists() and self._output_path.stat().st_size:
            raise StateMismatch(
                f"{self._output_path} exists and no batch state "
                f"({self._state_path.name}) is beside it: write the "
                "results to a new --output"
            )
        state = await self._new_state()
        save_state(self._state_path, state)
        return state, False

    def _check_target(self, state: BatchState) -> None:
        if state.target != self._backend.target:
            raise StateMismatch(
                f"this batch's jobs are on {state.target}, not "
                f"{self._backend.target}: continue it there"
            )

    async def _new_state(self) -> BatchState:
        """Validate the whole input, then plan its jobs."""
        loop = asyncio.get_running_loop()
        models = await self._backend.model_names()
        catalog = _ServiceCatalog(models, self._backend, loop)
        limit = self._backend.max_job_items
        limits = ChunkLimits(
            max_items=min(self._options.chunk_items, limit or 1 << 62),
            max_bytes=self._options.chunk_bytes,
        )
        stop = threading.Event()

        def validating(done: int, total: int) -> None:
            # The pass runs in a thread, which cannot be cancelled: it
            # looks here for an interruption now and then.
            if stop.is_set():
                raise _Stopped
            self._report(Progress("validating", done, total, Totals()))

        try:
            scan = await asyncio.to_thread(
                scan_input, self._input, catalog, limits, validating
            )
        except asyncio.CancelledError:
            stop.set()
            raise
        return BatchState(
            input_sha256=scan.sha256,
            input_bytes=scan.size,
            items=scan.items,
            target=self._backend.target,
            options=JobOptions(
                priority=self._options.priority,
                max_attempts=self._options.max_attempts,
                cache=self._options.cache,
                mode=self._options.mode,
                deadline=self._options.deadline,
                fallbacks=self._options.fallbacks,
            ),
            chunks=scan.chunks,
        )

    async def _drive(self, state: BatchState) -> None:
        self._report_state(state)
        while not state.complete:
            try:
                progressed = await self._submit_more(state)
                progressed = await self._collect(state) or progressed
                self._outage_since = None
            except Unavailable as error:
                progressed = False
                self._outage(error)
            except QuotaExceeded as error:
                # Over the client's request rate: wait as told.
                progressed = False
                await asyncio.sleep(error.retry_after)
            self._report_state(state)
            if not progressed:
                await asyncio.sleep(self._options.poll_interval_s)

    def _outage(self, error: Unavailable) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._outage_since > OUTAGE_LIMIT_S:
            raise BatchError(
                f"the service has been unavailable for over "
                f"{OUTAGE_LIMIT_S:.0f} s ({error.message}); run the same "
                "command again to continue"
            )

    async def _submit_more(self, state: BatchState) -> bool:
        """Submit chunks in order while fewer than ``active_jobs`` run."""
        if state.canceled:
            return False
        active = sum(1 for c in state.chunks if c.job_id and not c.done)
        submitted = False
        for chunk in state.chunks:
            if chunk.job_id is not None:
                continue
            if active >= self._options.active_jobs:
                break
            if time.monotonic() < self._submit_after:
                break
            try:
                chunk.job_id = await self._submit(state, chunk)
            except QuotaExceeded as error:
                self._submit_after = time.monotonic() + error.retry_after
                break
            except Unavailable:
                self._submit_after = time.monotonic() + OUTAGE_RETRY_S
                raise
            save_state(self._state_path, state)
            active += 1
            submitted = True
        return submitted

    async def _submit(self, state: BatchState, chunk: Chunk) -> str:
        lines = await asyncio.to_thread(self._chunk_items, chunk)
        options = replace(state.options, idempotency_key=chunk.key)
        try:
            return await self._backend.submit(
                [spec for _, spec in lines], options
            )
        except ValidationFailed as error:
            raise _refused(error, [number for number, _ in lines]) from None
        except PayloadTooLarge as error:
            raise BatchError(
                f"the service refused job {chunk.index + 1} as too large "
                f"({error.message}); run again with a smaller "
                "--chunk-items, writing to a new --output"
            ) from None
        except Conflict as error:
            raise BatchError(
                f"the service holds another job under this input's key "
                f"{chunk.key} ({error.message}): this input was run with "
                "other job options or chunk sizes; use those"
            ) from None

    def _chunk_items(self, chunk: Chunk) -> list[tuple[int, ItemSpec]]:
        return [
            (line.number, parse_line(line.text, line.number))
            for line in read_lines(
                self._input, chunk.start, chunk.end, chunk.first_line
            )
        ]

    async def _collect(self, state: BatchState) -> bool:
        """Write what finished, chunk by chunk; True when anything was."""
        progressed = False
        for chunk in state.chunks:
            if chunk.done:
                if chunk.job_id is not None and not chunk.settled:
                    progressed = await self._settle(state, chunk) or progressed
                continue
            if chunk.job_id is not None:
                progressed = await self._collect_chunk(state, chunk) or (
                    progressed
                )
            elif state.canceled:
                await asyncio.to_thread(self._write_unsubmitted, state, chunk)
                progressed = True
        return progressed

    async def _collect_chunk(self, state: BatchState, chunk: Chunk) -> bool:
        assert chunk.job_id is not None
        progressed = False
        limit = self._page_items.get(chunk.index, PAGE_MIN_ITEMS)
        while not chunk.done:
            want = min(limit, chunk.items - chunk.written)
            try:
                page = await self._backend.results(
                    chunk.job_id, chunk.written, want
                )
            except NotFound:
                raise BatchError(
                    f"job {chunk.job_id} of this batch is gone (deleted?): "
                    "its results cannot be written"
                ) from None
            ready = list(itertools.takewhile(lambda i: i.final, page))
            if ready:
                self._commit(state, chunk, ready)
                progressed = True
            if not ready or len(ready) < want:
                break
            # A full page was ready: the job runs ahead, ask for more.
            limit = min(limit * 2, PAGE_MAX_ITEMS)
            self._page_items[chunk.index] = limit
        return progressed

    async def _settle(self, state: BatchState, chunk: Chunk) -> bool:
        """Mark a written job consumed once the service has settled it.

        Its items can all be final a moment before its counters say so
        (the job is still PROCESSING): then this is tried again later,
        for up to ``SETTLE_LIMIT_S``; the results are written either way.

        Returns:
            Whether the chunk is settled now.
        """
        assert chunk.job_id is not None
        try:
            status: str | None = await self._backend.consume(chunk.job_id)
        except MetasyncError:
            status = None
        now = time.monotonic()
        deadline = self._settle_by.setdefault(
            chunk.index, now + SETTLE_LIMIT_S
        )
        if status in _UNSETTLED and now < deadline:
            return False
        chunk.settled = True
        save_state(self._state_path, state)
        return True

    def _write_unsubmitted(self, state: BatchState, chunk: Chunk) -> None:
        """A canceled batch: the chunks never submitted are canceled."""
        lines = read_lines(
            self._input, chunk.start, chunk.end, chunk.first_line
        )
        pending = itertools.islice(lines, chunk.written, None)
        while page := list(itertools.islice(pending, PAGE_MAX_ITEMS)):
            items = []
            for line in page:
                spec = parse_line(line.text, line.number)
                items.append(
                    ResultItem(
                        id=f"unsubmitted-{chunk.index}-{line.number}",
                        custom_id=spec.custom_id,
                        model=spec.model,
                        status=Status.CANCELED,
                    )
                )
            self._commit(state, chunk, items)

    def _commit(
        self, state: BatchState, chunk: Chunk, items: list[ResultItem]
    ) -> None:
        """Append results, then record them: the output first, always."""
        size = self._output.append(
            [encode_line(output_line(item)) for item in items]
        )
        for item in items:
            state.totals.add(item)
        chunk.written += len(items)
        state.output_bytes = size
        save_state(self._state_path, state)
        self._report_state(state)

    def _report_state(self, state: BatchState) -> None:
        self._report(
            Progress(
                "running",
                state.totals.written,
                state.items,
                replace(state.totals),
                jobs_submitted=sum(1 for c in state.chunks if c.job_id),
                jobs_total=len(state.chunks),
            )
        )

    def _report(self, progress: Progress) -> None:
        if self._on_progress is not None:
            self._on_progress(progress)


class _ServiceCatalog:
    """The service's models and prompts, for the validation thread."""

    def __init__(
        self,
        models: set[str],
        backend: JobsBackend,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._models = models
        self._backend = backend
        self._loop = loop
        self._prompts: dict[tuple[str, int | None], PromptInfo | None] = {}

    def has_model(self, name: str) -> bool:
        return name in self._models

    def prompt(self, prompt_id: str, version: int | None) -> PromptInfo | None:
        key = (prompt_id, version)
        if key not in self._prompts:
            # Called from the validation thread: ask on the loop's side.
            future = asyncio.run_coroutine_threadsafe(
                self._backend.prompt(prompt_id, version), self._loop
            )
            self._prompts[key] = future.result(PROMPT_LOOKUP_TIMEOUT_S)
        return self._prompts[key]


def _refused(
    error: ValidationFailed, numbers: list[int]
) -> InvalidInput | BatchError:
    """The service's 400 on a job, with its items named by line."""
    problems = []
    for problem in error.errors:
        match = _ITEM_FIELD.match(str(problem.get("field", "")))
        if match is None or int(match[1]) >= len(numbers):
            # Not about one item (the job's options): no line to name.
            return BatchError(f"the service refused a job: {error.message}")
        field = f"{match[2]}: " if match[2] else ""
        problems.append(
            LineProblem(
                numbers[int(match[1])], field + str(problem["message"])
            )
        )
    count = error.details.get("invalidItems", len(problems))
    return InvalidInput(
        problems,
        count,
        outcome="the service refused their job; the jobs before it go on",
    )
