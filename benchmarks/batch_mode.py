"""Batch mode against live mode: one job, the same stack, the same run.

The whole stack (see :mod:`benchmarks._metasync`) and one fake provider
server in its own process. One ``openai``-provider model on the fake
answers live calls after ``--latency-ms`` (``maxConcurrency``
``--concurrency``) and runs its provider batches on an accelerated
clock (``--batch-duration-ms`` from creation to end, instead of the
vendors' up to 24 h). The same job of ``--items`` items (one
``POST /jobs``) runs twice, one after the other: first with
``mode: "batch"``, then live. For each run it prints:

* the provider calls made, from the fake server's counters: for batch
  mode the vendor's batch calls (file uploads, batch creates, polls,
  result downloads, cancels, lines), for live mode the chat requests;
* the documents the database returned, inserted, updated and deleted
  per item, counted from its replies (the database runs wrapped by
  :mod:`benchmarks._counting_db`), the benchmark's own reads of the job
  document left out, with the commands that moved the most;
* the wall time from the ``POST /jobs`` until every item is in a final
  status;
* the job's cost as ``GET /jobs/{id}`` reports it (batch answers at the
  model's batch price, half the live one by default).

The workers run a batch round every ``--interval-s``
(``BATCH_SUBMIT_INTERVAL``); with the vendors' real pace a batch job
takes minutes to hours whatever the interval, so the batch wall time
says how the accelerated run went, not what to expect of a vendor.

Usage::

    python benchmarks/batch_mode.py [--items 10000] [--interval-s 2]
        [--batch-duration-ms 4000] [--latency-ms 50] [--concurrency 64]

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._fake import FakeServer

if TYPE_CHECKING:
    from benchmarks._metasync import MetasyncPeer

MODEL = "bm-batch-0"
#: USD per million tokens, live; the batch price is left to its default.
PRICING = {"inputPerMillion": 2.5, "outputPerMillion": 10.0}
#: Seconds between looks at the job's stored counters.
LOOK_S = 0.1
#: Database commands listed per run (those that moved the most).
TOP_COMMANDS = 6


@dataclass
class ModeRun:
    """What one run of the job measured."""

    mode: str
    items: int
    seconds: float
    processed: int
    cost: float
    provider_calls: dict[str, int]
    docs: dict[str, int]
    by_command: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The run, formatted."""
        per = max(self.items, 1)
        total = sum(self.docs.values())
        calls = ", ".join(
            f"{k} {v:,}" for k, v in sorted(self.provider_calls.items())
        )
        return [
            f"{self.mode}: {self.processed:,} of {self.items:,} PROCESSED "
            f"in {self.seconds:.1f} s; job cost ${self.cost:.4f}",
            f"  provider calls: {calls or 'none'}",
            f"  database documents per item {total / per:.2f} ("
            + ", ".join(f"{k} {v / per:.2f}" for k, v in self.docs.items())
            + ")",
            "  by command: "
            + ", ".join(f"{key} {n / per:.2f}" for n, key in self.by_command),
        ]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument(
        "--interval-s",
        type=float,
        default=2.0,
        help="BATCH_SUBMIT_INTERVAL of the workers",
    )
    parser.add_argument(
        "--batch-duration-ms",
        type=float,
        default=4000,
        help="a provider batch's creation to end, on the fake",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=50, help="of a live call"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="live maxConcurrency"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600, help="bound of one run"
    )
    return parser.parse_args()


def _batch_calls(fake: FakeServer) -> Counter[str]:
    return Counter(fake.batch_calls().get("openai", {}))


def _changed(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> list[tuple[int, str]]:
    moved = []
    for key, counts in after.items():
        old = before.get(key, {})
        count = sum(counts.values()) - sum(old.values())
        if count:
            moved.append((count, key))
    return sorted(moved, reverse=True)


def run_mode(
    peer: MetasyncPeer, fake: FakeServer, mode: str, args: argparse.Namespace
) -> ModeRun:
    """Run the job once in ``mode`` and measure it.

    Args:
        peer: The running stack.
        fake: The fake server.
        mode: ``batch`` or ``live``.
        args: The command line.

    Returns:
        The measurement.
    """
    items = [
        {"model": MODEL, "userContent": f"item {i}", "customId": f"i{i}"}
        for i in range(args.items)
    ]
    calls_before = _batch_calls(fake)
    requests_before = fake.requests([MODEL])
    docs_before, by_command_before = peer.db.documents()
    started = time.perf_counter()
    deadline = time.monotonic() + args.timeout_s
    response = peer.http.post(
        "/jobs",
        json={"items": items, "mode": mode},
        headers=peer.client,
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    own_reads = 0
    while True:
        own_reads += 1
        if peer.unfinished([job_id]) <= 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mode}: job unfinished after the timeout")
        time.sleep(LOOK_S)
    seconds = time.perf_counter() - started
    docs_after, by_command_after = peer.db.documents()
    job = peer.http.get(f"/jobs/{job_id}", headers=peer.client).json()
    docs = {k: docs_after[k] - docs_before.get(k, 0) for k in docs_after}
    # The benchmark's looks at the job document are not the service's.
    docs["returned"] -= own_reads
    by_command = []
    for count, key in _changed(by_command_after, by_command_before):
        if key.startswith("find jobs"):
            count -= own_reads
        by_command.append((count, key))
    by_command = sorted(by_command, reverse=True)[:TOP_COMMANDS]
    batch_calls = _batch_calls(fake) - calls_before
    provider_calls = {
        name: int(batch_calls.get(name, 0))
        for name in ("files", "creates", "polls", "downloads", "cancels")
    }
    provider_calls["batch lines"] = int(batch_calls.get("lines", 0))
    provider_calls["live requests"] = fake.requests([MODEL]) - requests_before
    return ModeRun(
        mode=mode,
        items=args.items,
        seconds=seconds,
        processed=int(job["counts"]["PROCESSED"]),
        cost=float(job["cost"]),
        provider_calls=provider_calls,
        docs=docs,
        by_command=by_command,
    )


def _add_model(peer: MetasyncPeer, fake: FakeServer, concurrency: int) -> None:
    from providers.fake import fake_model_config

    body = {
        "name": MODEL,
        "provider": "openai",
        "config": fake_model_config(
            "openai", MODEL, fake.url, timeoutSeconds=60
        ),
        "limits": {"maxConcurrency": concurrency},
        "pricing": PRICING,
    }
    response = peer.http.post("/admin/models", json=body, headers=peer.admin)
    assert response.status_code == 201, response.text


def main() -> None:
    args = _parse()
    state = Path(tempfile.mkdtemp(prefix="msbatch-"))
    print(f"state in {state}; {os.cpu_count()} CPUs", flush=True)
    # Read by the workers the stack starts (they inherit the environment).
    os.environ["BATCH_SUBMIT_INTERVAL"] = str(args.interval_s)
    fake = FakeServer(state)
    runs: list[ModeRun] = []
    try:
        fake.configure(
            {
                MODEL: {
                    "latencyMs": args.latency_ms,
                    "batch": {"durationMs": args.batch_duration_ms},
                }
            }
        )
        from benchmarks._metasync import MetasyncPeer

        peer = MetasyncPeer(state, fake)
        try:
            _add_model(peer, fake, args.concurrency)
            warm = [{"model": MODEL, "userContent": "warm up"}] * 8
            peer.wait([peer.submit(warm)], time.monotonic() + 120)
            for mode in ("batch", "live"):
                run = run_mode(peer, fake, mode, args)
                runs.append(run)
                print("\n".join(run.lines()), flush=True)
        finally:
            peer.close()
    finally:
        fake.stop()
    print()
    print(
        f"{args.items:,} items, one job, model {MODEL}: live L = "
        f"{args.latency_ms:g} ms, C = {args.concurrency}; batches "
        f"{args.batch_duration_ms / 1000:g} s each, rounds every "
        f"{args.interval_s:g} s"
    )
    for run in runs:
        print("\n".join(run.lines()))
    if len(runs) == 2 and runs[1].cost:
        print(f"batch cost / live cost = {runs[0].cost / runs[1].cost:.3f}")


if __name__ == "__main__":
    main()
