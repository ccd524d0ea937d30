"""``metasync batch run INPUT.jsonl --output OUT.jsonl``: an offline batch.

The input holds OpenAI Batch requests or job items, one a line; the
output gets OpenAI Batch output lines as results come in. The whole
input is validated before anything is submitted. Interrupted (Ctrl-C),
the same command continues where it stopped; ``--cancel`` cancels the
batch's jobs. The client key comes from ``METASYNC_API_KEY`` (a secret
is never an argument: arguments are visible to every local user).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.batch.api import URL_VARIABLE, backend_opener
from pipeline.batch.driver import BatchDriver
from pipeline.batch.errors import BatchError, InvalidInput
from pipeline.batch.records import (
    DEFAULT_CHUNK_ITEMS,
    BatchOptions,
    BatchResult,
    Progress,
)
from pipeline.errors import MetasyncError, ValidationFailed
from pipeline.jobs.item_ids import MAX_ITEMS_PER_JOB
from pipeline.jobs.mode import MODES, job_mode

#: Bad lines printed; the count says how many more.
SHOWN_PROBLEMS = 20


def add_parser(commands: Any) -> None:
    """Register the ``batch`` command."""
    batch = commands.add_parser(
        "batch", help="run a JSON lines file of requests (batch run -h)"
    )
    actions = batch.add_subparsers(dest="batch_command", required=True)
    run = actions.add_parser(
        "run",
        help="run (or continue) a batch and write its results",
        description=__doc__.split("\n\n", 1)[1].replace("``", "")
        if __doc__
        else None,
    )
    run.add_argument("input", type=Path, help="requests, one JSON a line")
    run.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="results file (its state is kept beside it)",
    )
    run.add_argument(
        "--url",
        help=f"a running service (default ${URL_VARIABLE}); without it, "
        "the local service's database and Ray cluster (or "
        "DB_CONNECTION_STRING and RAY_ADDRESS)",
    )
    run.add_argument(
        "--cancel",
        action="store_true",
        help="cancel the batch's jobs (running again writes what finished)",
    )
    run.add_argument(
        "--priority",
        type=_within(-1000, 1000),
        default=0,
        help="job priority, -1000 to 1000 (higher first)",
    )
    run.add_argument(
        "--max-attempts",
        type=_within(1, 20),
        default=3,
        help="attempts per request, 1 to 20 (default %(default)s)",
    )
    run.add_argument(
        "--cache",
        action="store_true",
        help="reuse stored answers of identical requests at temperature 0",
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        help="live calls, the providers' batch APIs (about half the "
        "price, answered within a day), or auto (batch while --deadline "
        "leaves the 24h window and BATCH_SAFETY_MARGIN, live otherwise "
        "and near it); default live, or auto with --deadline",
    )
    run.add_argument(
        "--deadline",
        help="how long each job may take, e.g. 24h (s, m, h or d)",
    )
    run.add_argument(
        "--no-fallbacks",
        action="store_true",
        help="fail items of a model whose provider is down instead of "
        "moving them to the model's catalog fallbacks",
    )
    run.add_argument(
        "--chunk-items",
        type=_within(1, MAX_ITEMS_PER_JOB),
        default=DEFAULT_CHUNK_ITEMS,
        help="requests per job (default %(default)s)",
    )


def _within(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not an integer: {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{value} is not between {low} and {high}"
            )
        return value

    return parse


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this batch."""
    words = ["metasync", "batch", "run", str(args.input)]
    words += ["--output", str(args.output)]
    if args.url:
        words += ["--url", args.url]
    return shlex.join(words)


class ProgressBar:
    """Validation, then results, as tqdm bars with tokens and cost."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None
        self._phase = ""

    def __call__(self, progress: Progress) -> None:
        """Show one progress report."""
        if progress.phase != self._phase:
            self.close()
            self._phase = progress.phase
            validating = progress.phase == "validating"
            self._bar = tqdm(
                total=progress.total,
                initial=progress.done,
                desc="validating" if validating else "results",
                unit="B" if validating else "req",
                unit_scale=validating,
                dynamic_ncols=True,
            )
        assert self._bar is not None
        self._bar.update(progress.done - self._bar.n)
        if progress.phase == "running":
            self._bar.set_postfix_str(_postfix(progress), refresh=False)

    def close(self) -> None:
        """End the current bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _postfix(progress: Progress) -> str:
    totals = progress.totals
    return (
        f"failed {totals.failed} "
        f"tokens {_count(totals.input_tokens)}/"
        f"{_count(totals.output_tokens)} "
        f"cost ${totals.cost:.4f} "
        f"jobs {progress.jobs_submitted}/{progress.jobs_total}"
    )


def _count(value: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    try:
        mode, deadline = job_mode(args.mode, args.deadline)
    except ValidationFailed as error:
        _fail(f"--{error.message}")
        return 2
    bar = ProgressBar()
    try:
        opener = backend_opener(args.url, None)
        options = BatchOptions(
            priority=args.priority,
            max_attempts=args.max_attempts,
            cache=args.cache,
            mode=mode,
            deadline=deadline,
            fallbacks=not args.no_fallbacks,
            chunk_items=args.chunk_items,
        )

        async def main() -> BatchResult | str:
            # SIGTERM stops the run as Ctrl-C does: through cancellation,
            # so the state stays resumable and the user is told how.
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, task.cancel
            )
            backend = await opener()
            try:
                driver = BatchDriver(
                    backend, args.input, args.output, options, bar
                )
                if args.cancel:
                    report = await driver.cancel()
                    return (
                        f"canceled {report.jobs_canceled} job(s); "
                        f"{report.items_unsubmitted} request(s) were never "
                        "submitted. Write what finished with: "
                        + resume_command(args)
                    )
                return await driver.run()
            finally:
                await backend.close()

        outcome = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        bar.close()
        _fail(f"interrupted; resume with: {resume_command(args)}")
        return 130
    except InvalidInput as error:
        bar.close()
        for problem in error.problems[:SHOWN_PROBLEMS]:
            _fail(f"{args.input}:{problem.line}: {problem.message}")
        hidden = error.count - min(len(error.problems), SHOWN_PROBLEMS)
        if hidden > 0:
            _fail(f"... and {hidden} more bad line(s)")
        _fail(f"{error.count} bad line(s); {error.outcome}")
        return 2
    except (BatchError, MetasyncError, RuntimeError, OSError) as error:
        bar.close()
        _fail(str(error))
        return 1
    bar.close()
    if isinstance(outcome, str):
        print(f"metasync: {outcome}")
        return 0
    _print_result(outcome)
    return 0


def _fail(message: str) -> None:
    print(f"metasync: {message}", file=sys.stderr, flush=True)


def _print_result(result: BatchResult) -> None:
    totals = result.totals
    print(
        f"metasync: {totals.written} result(s) in {result.output} "
        f"({totals.failed} failed, {totals.canceled} canceled); tokens "
        f"{totals.input_tokens} in, {totals.output_tokens} out; cost "
        f"${totals.cost:.4f}"
    )
