"""Pipeline benchmark: throughput, pick-up latency, round trips, ingestion.

Runs the whole service locally (embedded database, Ray, Serve, fake
provider in its own process) in a temporary state directory and prints
its figures. Targets on a 2-core machine (issue 4):

* throughput at 200 ms latency and maxConcurrency 32 on each of 2 models:
  at least 0.9 of the ideal 320 items/s;
* a single item's submit-to-processing-start median under 100 ms;
* database round trips per processed item at most 0.2 (workers' own,
  counted by a pymongo command listener);
* HTTP ingestion of at least 5,000 items/s in jobs of 1,000 items.

Usage: ``python benchmarks/pipeline.py [--items N] [--skip-...]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=6400)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--provider", default="openai")
    parser.add_argument("--single-items", type=int, default=40)
    parser.add_argument("--ingest-jobs", type=int, default=30)
    parser.add_argument("--ingest-threads", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-ingestion", action="store_true")
    return parser.parse_args()


class Bench:
    """The running stack and helpers to drive it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = tempfile.mkdtemp(prefix="msbench-")
        empty = Path(self.state) / "models.yaml"
        empty.write_text("models: []\n")
        os.environ.update(
            METASYNC_HOME=self.state,
            MODELS_FILE=str(empty),
            WORKER_REPLICAS=str(args.replicas),
            LOG_LEVEL="WARNING",
            DB_NAME="bench",
        )
        os.environ.pop("DB_CONNECTION_STRING", None)
        from benchmarks._fake import FakeServer
        from pipeline.settings import Settings
        from serve_app.launcher import LocalStack, StackOptions

        self.fake = FakeServer(Path(self.state))
        settings = Settings.from_env()
        self.admin = {"X-Admin-Key": settings.admin_api_key.get_secret_value()}
        self.stack = LocalStack(
            settings,
            StackOptions(
                port=_free_port(), fake_provider=False, dashboard=False
            ),
        )
        started = time.monotonic()
        self.stack.start()
        print(f"stack up in {time.monotonic() - started:.1f} s")
        self.http = httpx2.Client(base_url=self.stack.url, timeout=120)
        response = self.http.post(
            "/admin/clients", json={"name": "bench"}, headers=self.admin
        )
        self.client = {"Authorization": f"Bearer {response.json()['apiKey']}"}

    def model(self, name: str, latency_ms: float, concurrency: int) -> str:
        from providers.fake import fake_model_config

        body = {
            "name": name,
            "provider": self.args.provider,
            "config": fake_model_config(
                self.args.provider, name, self.fake.url, timeoutSeconds=60
            ),
            "limits": {"maxConcurrency": concurrency},
        }
        response = self.http.post(
            "/admin/models", json=body, headers=self.admin
        )
        assert response.status_code == 201, response.text
        self.fake.configure({name: {"latencyMs": latency_ms}})
        return name

    def submit(self, items: list[dict[str, object]]) -> dict[str, object]:
        response = self.http.post(
            "/jobs", json={"items": items}, headers=self.client
        )
        assert response.status_code == 201, response.text
        job: dict[str, object] = response.json()
        return job

    def wait(
        self, job_id: object, timeout_s: float = 600
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}", headers=self.client).json()
            counts = job["counts"]
            if counts["PENDING"] == 0 and counts["PROCESSING"] == 0:
                return dict(job)
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} unfinished")

    def worker_stats(self) -> list[dict[str, object]]:
        import ray

        from pipeline.code_version import installed_code_version
        from pipeline.worker.names import worker_name

        stats = []
        for replica in range(self.args.replicas):
            handle = ray.get_actor(
                worker_name(
                    self.args.provider, replica, installed_code_version()
                ),
                namespace="metasync",
            )
            stats.append(ray.get(handle.stats.remote()))
        return stats

    def sample_until_done(self, job_id: object) -> list[dict[str, dict]]:
        """Poll the workers' queues until the job is done."""
        samples: list[dict[str, dict]] = []
        while True:
            job = self.http.get(f"/jobs/{job_id}", headers=self.client).json()
            counts = job["counts"]
            if counts["PENDING"] == 0 and counts["PROCESSING"] == 0:
                return samples
            merged: dict[str, dict] = {
                "inFlight": {},
                "waiting": {},
                "lag": {},
            }
            for stats in self.worker_stats():
                merged["lag"][stats["worker"]] = stats["loopLagMs"]
                for key in ("inFlight", "waiting"):
                    for model, n in stats[key].items():
                        merged[key][model] = merged[key].get(model, 0) + n
            samples.append(merged)
            time.sleep(0.5)

    def worker_round_trips(self) -> int:
        return sum(int(s["roundTrips"]) for s in self.worker_stats())

    def close(self) -> None:
        self.http.close()
        self.stack.stop()
        self.fake.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def throughput(bench: Bench) -> None:
    args = bench.args
    models = [
        bench.model(f"tp-{i}", args.latency_ms, args.concurrency)
        for i in range(args.models)
    ]
    ideal = args.models * args.concurrency / (args.latency_ms / 1000)
    # Warm up: connections, prompts of the SDK clients, shares.
    bench.wait(
        bench.submit([{"model": m, "userContent": "w"} for m in models])["id"]
    )
    items = [
        {"model": models[i % len(models)], "userContent": f"item {i}"}
        for i in range(args.items)
    ]
    trips_before = bench.worker_round_trips()
    started = time.monotonic()
    job = bench.submit(items)
    samples = bench.sample_until_done(job["id"])
    elapsed = time.monotonic() - started
    trips = bench.worker_round_trips() - trips_before
    rate = args.items / elapsed
    peaks = bench.fake.peaks(models)
    print(
        f"end to end: {args.items} items from POST to all done in "
        f"{elapsed:.1f} s = {rate:.0f} items/s (ingestion included); ideal "
        f"{ideal:.0f}/s; ratio {rate / ideal:.2f}; max in flight per model "
        f"{peaks} (limit {args.concurrency})"
    )
    _timings(bench, job["id"], ideal)
    for stats in bench.worker_stats():
        ops = {
            k: v
            for k, v in stats["metrics"].items()
            if k.startswith(("ops", "dbg"))
        }
        print(f"worker {stats['worker']}: claims {stats['claims']}, {ops}")
    lags = [v for s in samples for v in s["lag"].values()]
    print(f"worker event loop lag: mean {statistics.mean(lags):.1f} ms")
    for model in models:
        in_flight = [s["inFlight"].get(model, 0) for s in samples]
        waiting = [s["waiting"].get(model, 0) for s in samples]
        print(
            f"model {model}: mean in flight {statistics.mean(in_flight):.1f}, "
            f"mean claimed and waiting {statistics.mean(waiting):.1f} "
            f"({len(samples)} samples)"
        )
    print(
        f"round trips: {trips} by the workers for {args.items} items = "
        f"{trips / args.items:.3f} per item (target <= 0.2)"
    )


def _timings(bench: Bench, job_id: object, ideal: float) -> None:
    """Where an item's time went: waiting after its claim, or the call."""
    rows = bench.http.get(
        f"/jobs/{job_id}/results",
        params={"format": "jsonl"},
        headers=bench.client,
    ).text.splitlines()
    import json

    items = [json.loads(r) for r in rows]
    calls = [i["result"]["latencyMs"] for i in items]
    held = [
        (
            datetime.fromisoformat(i["finishedAt"]).timestamp()
            - datetime.fromisoformat(i["startedAt"]).timestamp()
        )
        * 1000
        for i in items
    ]
    calls.sort()
    first = min(datetime.fromisoformat(i["startedAt"]) for i in items)
    last = max(datetime.fromisoformat(i["finishedAt"]) for i in items)
    window = (last - first).total_seconds()
    rate = len(items) / window
    print(
        f"processing: first claim to last result written {window:.1f} s = "
        f"{rate:.0f} items/s; ratio {rate / ideal:.2f} (target >= 0.90)"
    )
    print(
        f"per item: provider call mean {statistics.mean(calls):.0f} ms, "
        f"p90 {calls[int(len(calls) * 0.9)]:.0f} ms, "
        f"p99 {calls[int(len(calls) * 0.99)]:.0f} ms; "
        f"median {statistics.median(calls):.0f} ms; "
        f"claim to result written median {statistics.median(held):.0f} ms"
    )


def latency(bench: Bench) -> None:
    model = bench.model("lat", 20, 8)
    bench.wait(bench.submit([{"model": model, "userContent": "w"}])["id"])
    delays = []
    for i in range(bench.args.single_items):
        sent = time.time()
        job = bench.submit([{"model": model, "userContent": f"one {i}"}])
        bench.wait(job["id"])
        item = bench.http.get(
            f"/jobs/{job['id']}/results", headers=bench.client
        ).json()["items"][0]
        started = datetime.fromisoformat(item["startedAt"]).timestamp()
        delays.append((started - sent) * 1000)
        time.sleep(0.05)
    delays.sort()
    print(
        f"pick-up: submit to processing start over {len(delays)} single "
        f"items: median {statistics.median(delays):.0f} ms, p90 "
        f"{delays[int(len(delays) * 0.9)]:.0f} ms (target median < 100 ms)"
    )


def ingestion(bench: Bench) -> None:
    # A slow model with concurrency 1: processing barely competes.
    model = bench.model("ingest", 60_000, 1)
    jobs = bench.args.ingest_jobs
    bodies = [
        [
            {"model": model, "userContent": f"job {j} item {i} " + "x" * 80}
            for i in range(1000)
        ]
        for j in range(jobs)
    ]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(
        bench.args.ingest_threads
    ) as pool:
        list(pool.map(bench.submit, bodies))
    elapsed = time.monotonic() - started
    print(
        f"ingestion: {jobs} jobs of 1,000 items over HTTP in {elapsed:.1f} s "
        f"= {jobs * 1000 / elapsed:.0f} items/s (target >= 5,000) with "
        f"{bench.args.ingest_threads} concurrent clients"
    )


def main() -> None:
    args = _parse()
    bench = Bench(args)
    try:
        if not args.skip_latency:
            latency(bench)
        if not args.skip_throughput:
            throughput(bench)
        if not args.skip_ingestion:
            ingestion(bench)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
