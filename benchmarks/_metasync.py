"""Metasync as a throughput peer: the whole stack, driven over HTTP.

Starts what ``metasync up`` starts (embedded database as its own
process, a local Ray cluster with the offline settings, the Serve app,
the workers), except that the database is :mod:`benchmarks._counting_db`
so that the documents it reads and writes can be counted from its
replies. Models are ``openai``-provider catalog entries pointing at the
fake server, with ``maxConcurrency`` C.

A run submits the items over HTTP (``POST /jobs``, jobs of
``job_size`` items, one after another) and is timed from the first POST
until every item is in a final status (PROCESSED unless something
failed: the count is read back over HTTP after). While the provider
calls are still running it watches the fake server's request counter;
then one job's stored counters at a time (a one-document read), not
``GET /jobs/{id}``, which also reads every leased item and would load
the database under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2

from benchmarks._fake import FakeServer
from benchmarks._stack import machine_cpu_seconds
from benchmarks._workload import RunResult, Workload
from serve_app.local_services import ChildProcess, free_port

#: Seconds between looks at the fake server's counters during a run.
WATCH_INTERVAL_S = 0.1
#: Seconds between looks at a job's counters once every call was made.
FINISH_POLL_S = 0.02
#: The item statuses a job counts once reached.
FINAL_STATUSES = ("PROCESSED", "FAILED", "CANCELED")
#: The service's database.
DB_NAME = "bench"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process so far (0 if gone)."""
    import psutil  # type: ignore[import-untyped]

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _serve_replica_pids() -> list[int]:
    """Processes of this user whose title says they are Serve replicas."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and "ServeReplica" in cmdline[0]:
            found.append(int(process.info["pid"]))
    return found


class CountingDatabase:
    """:mod:`benchmarks._counting_db` on a free port in ``state_dir``."""

    def __init__(self, state_dir: Path, db_name: str) -> None:
        port = free_port()
        storage = state_dir / "db"
        storage.mkdir(parents=True, exist_ok=True)
        script = Path(__file__).with_name("_counting_db.py")
        self.child = ChildProcess(
            "counting database",
            [
                sys.executable,
                str(script),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(storage),
                "--log-level",
                "WARNING",
            ],
            state_dir / "logs" / "db.log",
        )
        self.child.start()
        self.child.wait_for_port(port, timeout_s=60)
        assert self.child.process is not None
        self.pid = self.child.process.pid
        self.uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        from pymongo import MongoClient

        self._client: MongoClient[dict[str, Any]] = MongoClient(self.uri)
        self.jobs = self._client[db_name]["jobs"]

    def documents(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Documents returned/inserted/updated/deleted so far, and by
        command and collection."""
        status = self._client.admin.command("serverStatus")
        return status["metrics"]["document"], status["benchDocuments"]

    def stop(self) -> None:
        """Stop the process."""
        self._client.close()
        self.child.stop()


@dataclass
class _Usage:
    """CPU seconds of the parts, and database documents, at one moment."""

    cpu: dict[str, float]
    docs: dict[str, int]
    by_command: dict[str, dict[str, int]]


class MetasyncPeer:
    """The running stack and the catalog of the workloads' models.

    Args:
        state_dir: Temporary state directory (database, logs, secrets).
        fake: The fake server the models point at.
        worker_replicas: ``WORKER_REPLICAS`` (actors per provider).
    """

    name = "Metasync"

    def __init__(
        self, state_dir: Path, fake: FakeServer, worker_replicas: int = 1
    ) -> None:
        self.fake = fake
        self.worker_replicas = worker_replicas
        self.db = CountingDatabase(state_dir, DB_NAME)
        empty = state_dir / "models.yaml"
        empty.write_text("models: []\n")
        os.environ.update(
            METASYNC_HOME=str(state_dir),
            MODELS_FILE=str(empty),
            WORKER_REPLICAS=str(worker_replicas),
            LOG_LEVEL="WARNING",
            DB_NAME=DB_NAME,
            DB_CONNECTION_STRING=self.db.uri,
        )
        from pipeline.settings import Settings
        from serve_app.launcher import LocalStack, StackOptions

        self.settings = Settings.from_env()
        self.stack = LocalStack(
            self.settings,
            StackOptions(
                port=free_port(), fake_provider=False, dashboard=False
            ),
        )
        started = time.monotonic()
        self.stack.start()
        print(f"Metasync stack up in {time.monotonic() - started:.1f} s")
        self.http = httpx2.Client(base_url=self.stack.url, timeout=120)
        self.admin = {
            "X-Admin-Key": self.settings.admin_api_key.get_secret_value()
        }
        response = self.http.post(
            "/admin/clients", json={"name": "bench"}, headers=self.admin
        )
        response.raise_for_status()
        self.client = {"Authorization": f"Bearer {response.json()['apiKey']}"}

    def close(self) -> None:
        """Stop the stack and the database."""
        self.http.close()
        self.stack.stop()
        self.db.stop()

    # -- the catalog and the stack's processes ---------------------------

    def _model_body(self, name: str, limits: dict[str, int]) -> dict[str, Any]:
        from providers.fake import fake_model_config

        return {
            "name": name,
            "provider": "openai",
            "config": fake_model_config(
                "openai", name, self.fake.url, timeoutSeconds=60
            ),
            "limits": limits,
        }

    def add_models(
        self, workload: Workload, limits: dict[str, int] | None = None
    ) -> None:
        """Put the workload's models in the catalog (once), with C as
        their ``maxConcurrency`` unless ``limits`` says otherwise."""
        limits = limits or {"maxConcurrency": workload.concurrency}
        for name in workload.model_names:
            response = self.http.post(
                "/admin/models",
                json=self._model_body(name, limits),
                headers=self.admin,
            )
            if response.status_code != 409:
                assert response.status_code == 201, response.text

    def set_limits(self, workload: Workload, limits: dict[str, int]) -> None:
        """Replace the limits of the workload's models (the workers see
        it at their next catalog refresh)."""
        for name in workload.model_names:
            response = self.http.put(
                f"/admin/models/{name}",
                json=self._model_body(name, limits),
                headers=self.admin,
            )
            assert response.status_code == 200, response.text

    def worker_stats(self, replica: int = 0) -> dict[str, Any]:
        """One ``openai`` worker's own counters (``pid`` among them)."""
        import ray

        from pipeline.code_version import code_version
        from pipeline.worker.names import worker_name

        handle = ray.get_actor(
            worker_name("openai", replica, code_version(self.settings)),
            namespace=self.settings.ray_namespace,
        )
        return cast(dict[str, Any], ray.get(handle.stats.remote()))

    def worker_pids(self) -> list[int]:
        """The processes of every ``openai`` worker replica."""
        return [
            int(self.worker_stats(r)["pid"])
            for r in range(self.worker_replicas)
        ]

    def app_pids(self) -> list[int]:
        """The processes of the Serve replicas (the HTTP app)."""
        return _serve_replica_pids()

    def _usage(self, worker_pids: list[int], app_pids: list[int]) -> _Usage:
        cpu = {
            "worker": sum(cpu_seconds(p) for p in worker_pids),
            "database": cpu_seconds(self.db.pid),
            "app": sum(cpu_seconds(p) for p in app_pids),
            "fake provider": cpu_seconds(self.fake.pid),
            "whole machine": machine_cpu_seconds(),
        }
        docs, by_command = self.db.documents()
        return _Usage(cpu, docs, by_command)

    # -- one run ------------------------------------------------------------

    def submit(self, items: list[dict[str, str]]) -> str:
        """POST one job; return its id."""
        response = self.http.post(
            "/jobs", json={"items": items}, headers=self.client
        )
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def _finished(self, job_id: str) -> bool:
        """Whether every item of the job is in a final status (see
        :meth:`unfinished`)."""
        return self.unfinished([job_id]) <= 0

    def unfinished(self, job_ids: list[str]) -> int:
        """Items of the jobs not yet in a final status (pending or leased).

        Read from the jobs' stored counters, the figures ``GET
        /jobs/{id}`` reports, without the read of every leased item that
        the route adds (it would load the database under test).
        """
        from bson import ObjectId

        jobs = list(
            self.db.jobs.find(
                {"_id": {"$in": [ObjectId(j) for j in job_ids]}},
                {"counts": 1, "totalItems": 1},
            )
        )
        assert len(jobs) == len(set(job_ids)), job_ids
        left = 0
        for job in jobs:
            counts = job.get("counts") or {}
            final = sum(int(counts.get(s, 0)) for s in FINAL_STATUSES)
            left += int(job["totalItems"]) - final
        return left

    def processed(self, job_ids: list[str]) -> int:
        """Items of the jobs PROCESSED, as ``GET /jobs/{id}`` reports."""
        return sum(
            int(
                self.http.get(f"/jobs/{j}", headers=self.client).json()[
                    "counts"
                ]["PROCESSED"]
            )
            for j in job_ids
        )

    def wait(
        self,
        job_ids: list[str],
        deadline: float,
        calls: tuple[list[str], int] = ([], 0),
    ) -> int:
        """Block until every item of the jobs is in a final status.

        Args:
            job_ids: The jobs.
            deadline: ``time.monotonic()`` to give up at.
            calls: Models, and the calls to them the fake server will
                have seen by then (watched first, off the database).

        Returns:
            How many job documents it read from the database.

        Raises:
            TimeoutError: Not done by the deadline.
        """
        models, expected = calls
        while expected and self.fake.requests(models) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError("provider calls unfinished")
            time.sleep(WATCH_INTERVAL_S)
        left, reads = list(job_ids), 0
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left)} job(s) unfinished")
            reads += 1
            if self._finished(left[0]):
                left.pop(0)
            else:
                time.sleep(FINISH_POLL_S)
        return reads

    def run(
        self,
        workload: Workload,
        *,
        job_size: int,
        timeout_s: float,
        profile: Path | None = None,
    ) -> RunResult:
        """Run one workload end to end and measure it.

        Args:
            workload: What to run.
            job_size: Items per ``POST /jobs``.
            timeout_s: Give up after this long.
            profile: Record the worker with py-spy into this file.

        Returns:
            The measurement; the notes hold CPU and documents per item.
        """
        self.add_models(workload)
        names = workload.model_names
        warm = [
            {"model": m, "userContent": "warm up"}
            for m in names
            for _ in range(workload.concurrency)
        ]
        self.wait([self.submit(warm)], time.monotonic() + timeout_s)
        worker_pids, app_pids = self.worker_pids(), self.app_pids()
        items = [
            {"model": model, "userContent": text}
            for model, text in workload.prompts()
        ]
        chunks = [
            items[i : i + job_size] for i in range(0, len(items), job_size)
        ]
        spy = _start_profile(worker_pids[0], profile) if profile else None
        try:
            self.fake.reset()
            before = self._usage(worker_pids, app_pids)
            started, started_at = time.perf_counter(), time.time()
            deadline = time.monotonic() + timeout_s
            job_ids = [self.submit(chunk) for chunk in chunks]
            posted = time.perf_counter() - started
            own_reads = self.wait(job_ids, deadline, (names, len(items)))
            elapsed = time.perf_counter() - started
            after = self._usage(worker_pids, app_pids)
        finally:
            if spy is not None:
                _stop_profile(spy)
        arrivals = self.fake.arrivals(names)
        done = self.processed(job_ids)
        last_answer = arrivals[-1] + workload.latency_ms / 1000
        timeline = (
            f"POSTs took {posted:.2f} s; first provider call "
            f"{arrivals[0] - started_at:.2f} s after the first POST; all "
            f"done {started_at + elapsed - last_answer:.2f} s after the "
            "last answer"
        )
        return RunResult(
            self.name,
            workload,
            done,
            elapsed,
            peaks=self.fake.peaks(names),
            notes=[
                timeline,
                *_notes(before, after, done, elapsed, len(chunks), own_reads),
            ],
        )


def _notes(
    before: _Usage,
    after: _Usage,
    done: int,
    seconds: float,
    jobs: int,
    own_reads: int,
) -> list[str]:
    per_item = max(done, 1)
    cpu = {
        k: (after.cpu[k] - before.cpu[k]) * 1000 / per_item for k in after.cpu
    }
    docs = {k: after.docs[k] - before.docs.get(k, 0) for k in after.docs}
    # The benchmark's own reads of job documents (one per look) are not
    # the service's.
    docs["returned"] -= own_reads
    total = sum(docs.values())
    notes = [
        f"{jobs} job(s); CPU per item: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items())
        + f" (machine {cpu['whole machine'] * done / 1000 / seconds:.2f} "
        "cores busy)",
        f"database documents per item {total / per_item:.2f} ("
        + ", ".join(f"{k} {v / per_item:.2f}" for k, v in docs.items())
        + f") from its replies; {own_reads} reads of the benchmark's own "
        "excluded",
    ]
    rows = []
    for key, counts in sorted(after.by_command.items()):
        old = before.by_command.get(key, {})
        moved = sum(counts.values()) - sum(old.values())
        if key.startswith("find jobs"):
            moved -= own_reads
        if moved / per_item >= 0.005:
            rows.append((moved, key))
    notes.append(
        "  by command: "
        + ", ".join(
            f"{key} {moved / per_item:.2f}"
            for moved, key in sorted(rows, reverse=True)
        )
    )
    return notes


def _start_profile(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (raw collapsed stacks) into ``path``."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(path),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_profile(spy: subprocess.Popen[bytes]) -> None:
    import signal

    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
