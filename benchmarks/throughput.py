"""Throughput: Metasync and two peers, same fake server, same run.

One fake OpenAI-compatible server (``python -m providers.fake``, its own
process, fixed latency) answers every peer on this machine:

* Metasync: the whole stack (see :mod:`benchmarks._metasync`), items
  submitted with ``POST /jobs``, timed from the first POST until every
  item is PROCESSED; also the worker's CPU per item and the documents
  the database returned and wrote per item (from its replies);
* a plain asyncio script with the ``openai`` SDK, one semaphore per
  model (see :mod:`benchmarks._peers`);
* Ray Data LLM's ``HttpRequestProcessorConfig`` processor.

Workloads (issue 8): (a) L = 50 ms, C = 64, 1 model, 8,000 items (ideal
1,280/s); (b) L = 200 ms, C = 32, 2 models, 4,000 items (ideal 320/s).
The peers run one after another, never at the same time: asyncio first,
then Ray Data (its own Ray cluster, shut down after), then Metasync.
Each run is bounded by ``--timeout-s``.

Besides items/s and the ratio to the ideal, each run prints the fake
server's view (the peak of calls in flight per model, and the rate over
the window from the first call's arrival to the last answer, which
leaves out start-up and result writing), and for Metasync:

* CPU per processed item of the worker actor's process (psutil on the
  ``pid`` its ``stats`` reports, before and after), the database, the
  Serve replica, the fake server and the whole machine;
* documents the database returned, inserted, updated and deleted per
  processed item, read from its replies: SecantusDB's ``serverStatus``
  only counts commands (``opcounters``), so the database runs wrapped by
  :mod:`benchmarks._counting_db`, which adds mongod's
  ``metrics.document`` counters (and a breakdown per command).

Usage::

    python benchmarks/throughput.py [--workloads a,b]
        [--peers metasync,asyncio,raydata] [--repeat N]
        [--profile-worker DIR]

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._fake import FakeServer
from benchmarks._workload import WORKLOADS, RunResult, Workload

PEERS = ("asyncio", "raydata", "metasync")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="a,b")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--items", type=int, help="override every workload's item count"
    )
    parser.add_argument(
        "--job-size", type=int, default=1000, help="items per POST /jobs"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=300, help="bound of one run"
    )
    parser.add_argument("--rd-batch-size", type=int, default=4)
    parser.add_argument(
        "--rd-actors", type=int, default=2, help="Ray Data HTTP actors"
    )
    parser.add_argument("--rd-qps", type=int)
    parser.add_argument(
        "--profile-worker",
        type=Path,
        metavar="DIR",
        help="py-spy the Metasync worker during each run, into DIR",
    )
    args = parser.parse_args()
    unknown = set(args.peers.split(",")) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {PEERS}")
    return args


def _workloads(args: argparse.Namespace) -> list[Workload]:
    chosen = [WORKLOADS[key] for key in args.workloads.split(",")]
    if args.items:
        from dataclasses import replace

        chosen = [replace(w, items=args.items) for w in chosen]
    return chosen


def _rd_batches(args: argparse.Namespace, workload: Workload) -> int:
    # Each batch sends its requests one after another, so the batches
    # running at once in all actors are the calls in flight: C per model.
    total = workload.models * workload.concurrency
    return max(1, -(-total // args.rd_actors))


def _repeat(
    args: argparse.Namespace,
    fake: FakeServer,
    workload: Workload,
    run: Callable[[int], RunResult],
) -> list[RunResult]:
    results = []
    for attempt in range(args.repeat):
        fake.reset()
        started = time.monotonic()
        try:
            result = run(attempt)
        except TimeoutError as exc:
            print(f"  run {attempt + 1} of {workload.key} timed out: {exc}")
            continue
        if not result.peaks:
            result.peaks = fake.peaks(workload.model_names)
        result.notes.insert(0, _calls_window(fake, workload))
        results.append(result)
        print(
            f"  {result.peer} ({workload.key}, run {attempt + 1}): "
            f"{result.rate:,.0f} items/s, ratio {result.ratio:.2f} "
            f"({result.done:,} done in {result.seconds:.1f} s; "
            f"{time.monotonic() - started:.0f} s with set-up)",
            flush=True,
        )
        for note in result.notes:
            print(f"    {note}")
    return results


def _any_attempt(run: Callable[[], RunResult]) -> Callable[[int], RunResult]:
    def attempt(_: int) -> RunResult:
        return run()

    return attempt


def _calls_window(fake: FakeServer, workload: Workload) -> str:
    """The provider calls alone: first arrival to last answer."""
    arrivals = fake.arrivals(workload.model_names)
    if not arrivals:
        return "provider calls: none"
    latency_s = workload.latency_ms / 1000
    window = arrivals[-1] - arrivals[0] + latency_s
    rate = len(arrivals) / window
    in_flight = len(arrivals) * latency_s / window / workload.models
    return (
        f"provider calls: {len(arrivals):,} from first arrival to last "
        f"answer in {window:.2f} s = {rate:,.0f}/s (ratio "
        f"{rate / workload.ideal:.2f}; mean in flight per model "
        f"{in_flight:.1f} of {workload.concurrency})"
    )


def _table(workload: Workload, results: list[list[RunResult]]) -> None:
    print()
    print(workload.describe())
    print(
        f"  {'peer':<22} {'items/s':>13} {'ratio':>11}  peak in flight "
        "per model"
    )
    for runs in results:
        if not runs:
            continue
        rates = sorted(r.rate for r in runs)
        ratios = sorted(r.ratio for r in runs)
        rate = f"{rates[0]:,.0f}" + (
            f"-{rates[-1]:,.0f}" if len(runs) > 1 else ""
        )
        ratio = f"{ratios[0]:.2f}" + (
            f"-{ratios[-1]:.2f}" if len(runs) > 1 else ""
        )
        peaks = runs[-1].peaks
        print(f"  {runs[0].peer:<22} {rate:>13} {ratio:>11}  {peaks}")
    for runs in results:
        if runs and runs[-1].notes:
            print(f"  {runs[0].peer} (last run):")
            for note in runs[-1].notes:
                print(f"    {note}")


def main() -> None:
    args = _parse()
    peers = args.peers.split(",")
    workloads = _workloads(args)
    state = Path(tempfile.mkdtemp(prefix="mstp-"))
    print(f"state in {state}; {os.cpu_count()} CPUs", flush=True)
    fake = FakeServer(state)
    results: dict[str, list[list[RunResult]]] = {w.key: [] for w in workloads}
    try:
        for w in workloads:
            fake.configure(
                {m: {"latencyMs": w.latency_ms} for m in w.model_names}
            )
        if "asyncio" in peers:
            from benchmarks._peers import run_asyncio

            for w in workloads:
                run = functools.partial(
                    run_asyncio, fake, w, timeout_s=args.timeout_s
                )
                results[w.key].append(
                    _repeat(args, fake, w, _any_attempt(run))
                )
        if "raydata" in peers:
            from benchmarks._peers import run_ray_data

            for w in workloads:
                run = functools.partial(
                    run_ray_data,
                    fake,
                    w,
                    state,
                    batch_size=args.rd_batch_size,
                    actors=args.rd_actors,
                    batches_per_actor=_rd_batches(args, w),
                    qps=args.rd_qps,
                    timeout_s=args.timeout_s,
                )
                results[w.key].append(
                    _repeat(args, fake, w, _any_attempt(run))
                )
        if "metasync" in peers:
            _run_metasync(args, fake, workloads, state, results)
    finally:
        fake.stop()
    for w in workloads:
        _table(w, results[w.key])


def _run_metasync(
    args: argparse.Namespace,
    fake: FakeServer,
    workloads: list[Workload],
    state: Path,
    results: dict[str, list[list[RunResult]]],
) -> None:
    from benchmarks._metasync import MetasyncPeer

    peer = MetasyncPeer(state, fake)

    def run(w: Workload, attempt: int) -> RunResult:
        profile = None
        if args.profile_worker:
            args.profile_worker.mkdir(parents=True, exist_ok=True)
            profile = args.profile_worker / f"worker-{w.key}-{attempt}.txt"
        return peer.run(
            w,
            job_size=args.job_size,
            timeout_s=args.timeout_s,
            profile=profile,
        )

    try:
        for w in workloads:
            results[w.key].append(
                _repeat(args, fake, w, functools.partial(run, w))
            )
    finally:
        peer.close()


if __name__ == "__main__":
    main()
