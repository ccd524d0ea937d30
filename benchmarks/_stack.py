"""The local stack a benchmark starts: database, fake provider and Ray.

Everything listens on 127.0.0.1 and lives in a temporary state
directory; :meth:`LocalStack.close` stops what was started, in reverse
order (``ray.shutdown``, never ``ray stop``), and removes the directory.
The database is SecantusDB in this process (benchmarks, like tests,
may start it in-process); the fake provider runs in its own process so
that it does not share this process's interpreter lock with the
database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from benchmarks._fake import FakeServer


def _proc_stat(pid: str) -> tuple[str, int, float] | None:
    """``(name, parent pid, CPU seconds)`` of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and all its descendants.

    Ray's daemons and worker processes, and the fake provider, descend
    from the driver, so this separates the benchmark's own processes
    from whatever else runs on the machine. Linux only (``/proc``);
    empty elsewhere.
    """
    if not Path("/proc/self/stat").exists():
        return {}
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _proc_stat(entry)
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    mine, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in stats:
            mine[pid] = (stats[pid][0], stats[pid][2])
        todo.extend(children.get(pid, []))
    return mine


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (``/proc/stat``)."""
    try:
        with open("/proc/stat") as file:
            fields = file.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...: all but idle
    # and iowait are busy.
    ticks = [int(value) for value in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


class LocalStack:
    """SecantusDB, the fake provider and a local Ray cluster.

    The workers' environment (database, secrets, state directory) is set
    in ``os.environ`` before Ray starts, so every Ray process inherits
    it; the previous values come back on :meth:`close`.

    Args:
        num_cpus: CPUs Ray offers.
        namespace: Ray namespace of the named actors.
    """

    def __init__(
        self, *, num_cpus: int = 2, namespace: str = "metasync-bench"
    ) -> None:
        self.num_cpus = num_cpus
        self.namespace = namespace
        self.state_dir = Path(tempfile.mkdtemp(prefix="msbench-stack-"))
        self.db_name = f"bench-{uuid.uuid4().hex[:8]}"
        self.mongo_uri = ""
        self.fake: FakeServer | None = None
        self._exit = contextlib.ExitStack()
        self._previous_env: dict[str, str | None] = {}

    def start(self) -> LocalStack:
        """Start everything; on failure, stop what had started."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        from secantus import SecantusDBServer

        server = self._exit.enter_context(
            SecantusDBServer(host="127.0.0.1", storage_path=":memory:", port=0)
        )
        self.mongo_uri = server.uri
        self.fake = FakeServer(self.state_dir)
        self._exit.callback(self.fake.stop)
        self._set_env(
            {
                "METASYNC_ENV": "test",
                "METASYNC_HOME": str(self.state_dir),
                "DB_CONNECTION_STRING": self.mongo_uri,
                "DB_NAME": self.db_name,
                "ADMIN_API_KEY": "bench-admin-" + uuid.uuid4().hex,
                "API_KEY_PEPPER": "bench-pepper-" + uuid.uuid4().hex,
                "DOCS_SECRET": "bench-docs-" + uuid.uuid4().hex,
                "RAY_NAMESPACE": self.namespace,
                "WORKER_REPLICAS": "1",
                # One machine, 2 CPUs for Ray: as `metasync up` does.
                "WORKER_NUM_CPUS": "0.1",
                "LOG_LEVEL": "WARNING",
            }
        )
        import ray

        from pipeline.cluster.runtime import init_local_ray

        init_local_ray(
            self.state_dir,
            num_cpus=self.num_cpus,
            namespace=self.namespace,
            log_to_driver=False,
        )
        self._exit.callback(ray.shutdown)

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._previous_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def close(self) -> None:
        """Stop everything started, newest first; restore the env.

        The state directory (Ray's HOME, the fake provider's log) goes
        too; Ray's own session logs stay under ``/tmp/ray``.
        """
        self._exit.close()
        for name, value in self._previous_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._previous_env.clear()
        shutil.rmtree(self.state_dir, ignore_errors=True)
