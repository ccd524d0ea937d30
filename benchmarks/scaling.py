"""Scaling: memory with a large backlog, and throughput per worker replica.

Two measurements of the whole stack (see :mod:`benchmarks._metasync`)
against one fake OpenAI-compatible server on this machine:

``backlog``
    Submits ``--backlog`` items (default 100,000) over HTTP while the
    model's catalog limits hold them (rpm 1), so they are all pending at
    once; then lifts the limit (C = 64, the fake model answering after
    ``--latency-ms``) and times the drain from the first call it makes.
    The resident memory of the HTTP app (Serve replicas) and the worker
    actors is sampled every ``SAMPLE_S`` from before the first POST to
    the end: the growth over the baseline is printed at the end of the
    submission (everything pending) and at its peak, with the drain rate
    and its ratio to the ideal (C / L).

``replicas``
    Workload (a) of :mod:`benchmarks.throughput` (L = 50 ms, C = 64,
    one model) with ``WORKER_REPLICAS`` = 1, 2, 4, a fresh stack each,
    beside the plain asyncio script in the same run. The model's C is
    shared by the replicas (the coordinator splits it), so more replicas
    add processes, not provider calls.

Usage::

    python benchmarks/scaling.py [--parts backlog,replicas]
        [--backlog N] [--replicas 1,2,4] [--items N]

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._fake import FakeServer
from benchmarks._workload import WORKLOADS, RunResult, Workload

#: Seconds between memory samples.
SAMPLE_S = 0.25
MB = 1024 * 1024


def _rss(pids: list[int]) -> int:
    """Resident bytes of these processes together (gone ones count 0)."""
    import psutil  # type: ignore[import-untyped]

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += int(psutil.Process(pid).memory_info().rss)
    return total


@dataclass
class _Sampler:
    """Samples the resident memory of some processes in a thread."""

    pids: list[int]
    peak: int = 0
    last: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> int:
        """Take one sample now; return it."""
        self.last = _rss(self.pids)
        self.peak = max(self.peak, self.last)
        return self.last

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def backlog(
    state: Path, fake: FakeServer, args: argparse.Namespace
) -> list[str]:
    """Memory with ``args.backlog`` items pending, then the drain rate."""
    from benchmarks._metasync import MetasyncPeer

    workload = Workload(
        "m",
        latency_ms=args.latency_ms,
        concurrency=64,
        models=1,
        items=args.backlog,
    )
    model = workload.model_names[0]
    fake.configure({model: {"latencyMs": args.latency_ms}})
    peer = MetasyncPeer(state / "backlog", fake)
    try:
        # rpm 1 holds the backlog: the worker claims its window and sends
        # one call a minute until the limits are replaced.
        peer.add_models(workload, {"maxConcurrency": 64, "rpm": 1})
        warm = [{"model": model, "userContent": "warm up"}]
        peer.wait([peer.submit(warm)], time.monotonic() + 120)
        pids = peer.app_pids() + peer.worker_pids()
        sampler = _Sampler(pids)
        baseline = sampler.sample()
        items = [{"model": m, "userContent": t} for m, t in workload.prompts()]
        with sampler:
            started = time.perf_counter()
            job_ids = [
                peer.submit(items[i : i + args.job_size])
                for i in range(0, len(items), args.job_size)
            ]
            posted = time.perf_counter() - started
            pending = peer.unfinished(job_ids)
            at_submitted = sampler.sample()
            fake.reset()
            peer.set_limits(workload, {"maxConcurrency": 64})
            peer.wait(job_ids, time.monotonic() + args.timeout_s)
            finished = time.time()
        done = peer.processed(job_ids)
        # From the first call after the limits were lifted (the workers
        # see the change at their next catalog refresh) to all done.
        drained = finished - fake.arrivals([model])[0]
    finally:
        peer.close()
    rate = done / drained
    return [
        f"backlog: {len(items):,} items in {len(job_ids)} jobs POSTed in "
        f"{posted:.1f} s; {pending:,} unfinished when the last POST returned",
        f"  memory of app + workers ({len(pids)} processes): baseline "
        f"{baseline / MB:.0f} MB; growth with the backlog pending "
        f"{(at_submitted - baseline) / MB:+.0f} MB; peak growth "
        f"{(sampler.peak - baseline) / MB:+.0f} MB (target <= 300 MB)",
        f"  drain: {done:,} processed in {drained:.1f} s = {rate:,.0f}/s "
        f"(L = {args.latency_ms:g} ms, C = 64: ideal "
        f"{workload.ideal:,.0f}/s, ratio {rate / workload.ideal:.2f})",
    ]


def replicas(
    state: Path, fake: FakeServer, args: argparse.Namespace
) -> list[str]:
    """Workload (a) per replica count, beside the asyncio script."""
    from benchmarks._metasync import MetasyncPeer
    from benchmarks._peers import run_asyncio

    workload = WORKLOADS["a"]
    if args.items:
        workload = replace(workload, items=args.items)
    fake.configure(
        {m: {"latencyMs": workload.latency_ms} for m in workload.model_names}
    )
    lines = [workload.describe()]
    fake.reset()
    reference = run_asyncio(fake, workload, timeout_s=args.timeout_s)
    lines.append(_row("asyncio script", reference))
    for count in args.replicas:
        peer = MetasyncPeer(state / f"replicas-{count}", fake, count)
        try:
            fake.reset()
            result = peer.run(
                workload, job_size=args.job_size, timeout_s=args.timeout_s
            )
        finally:
            peer.close()
        lines.append(_row(f"WORKER_REPLICAS={count}", result))
        lines.extend(f"    {note}" for note in result.notes)
    return lines


def _row(label: str, result: RunResult) -> str:
    return (
        f"  {label:<20} {result.rate:>7,.0f} items/s  ratio "
        f"{result.ratio:.2f}  ({result.done:,} in {result.seconds:.1f} s)"
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", default="backlog,replicas", help="backlog, replicas"
    )
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="items pending at once"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=50, help="latency of the drain"
    )
    parser.add_argument(
        "--replicas",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="WORKER_REPLICAS values, comma separated",
    )
    parser.add_argument(
        "--items", type=int, help="items of the replicas workload"
    )
    parser.add_argument(
        "--job-size", type=int, default=1000, help="items per POST /jobs"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=900, help="bound of one run"
    )
    return parser.parse_args()


def main() -> None:
    args = _parse()
    parts = {"backlog": backlog, "replicas": replicas}
    chosen = args.parts.split(",")
    unknown = set(chosen) - set(parts)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; known: {parts}")
    state = Path(tempfile.mkdtemp(prefix="msscale-"))
    print(f"state in {state}; {os.cpu_count()} CPUs", flush=True)
    fake = FakeServer(state)
    report: list[str] = []
    try:
        for name in chosen:
            report.extend(parts[name](state, fake, args))
    finally:
        fake.stop()
    print()
    print("\n".join(report))


if __name__ == "__main__":
    main()
