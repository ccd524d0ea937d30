"""Starting Ray on this machine without any traffic leaving it.

Out of the box ``ray.init`` probes cloud metadata endpoints and reports
usage statistics. Every place the project starts Ray goes through
:func:`init_local_ray`, which switches both off: usage stats disabled and
pointed at a dead loopback port, auth mode set, and a
``ray_bootstrap_config.yaml`` (``{}``) in the HOME that Ray's own
processes see (its absence triggers the metadata probe).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Environment that keeps Ray's traffic on this machine.
OFFLINE_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "RAY_AUTH_MODE": "disabled",
}

BOOTSTRAP_FILE = "ray_bootstrap_config.yaml"


def apply_offline_env(
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Set the variables that stop Ray's usage reports."""
    env = os.environ if environ is None else environ
    for name, value in OFFLINE_RAY_ENV.items():
        env.setdefault(name, value)
    if env["RAY_USAGE_STATS_ENABLED"] != "0":
        env["RAY_USAGE_STATS_ENABLED"] = "0"


def prepare_ray_home(state_dir: str | Path) -> Path:
    """A HOME for Ray's processes that holds the bootstrap file.

    Args:
        state_dir: The project's state directory.

    Returns:
        The directory, created if needed.
    """
    home = Path(state_dir).resolve() / "ray-home"
    home.mkdir(parents=True, exist_ok=True)
    bootstrap = home / BOOTSTRAP_FILE
    if not bootstrap.exists():
        bootstrap.write_text("{}\n")
    return home


@contextmanager
def _home(path: Path) -> Iterator[None]:
    """Point HOME at ``path`` while Ray spawns its daemons."""
    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = previous


def init_local_ray(
    state_dir: str | Path,
    *,
    num_cpus: int | None = None,
    include_dashboard: bool = False,
    dashboard_port: int | None = None,
    namespace: str = "metasync",
    object_store_memory: int = 512 * 2**20,
    address: str | None = "local",
    **options: Any,
) -> Any:
    """Start (or, with ``address``, join) Ray with the offline settings.

    Ray's daemons, and the worker processes they start, inherit the HOME
    that holds the bootstrap file; this process keeps its own HOME.

    Args:
        state_dir: The project's state directory (for Ray's HOME).
        num_cpus: CPUs to offer; all of the machine's by default.
        include_dashboard: Serve the Ray dashboard (on 127.0.0.1).
        dashboard_port: The dashboard's port.
        namespace: The Ray namespace of the project's named actors.
        object_store_memory: Bytes for the object store (new clusters).
        address: ``"local"`` starts a new cluster; a cluster address
            (or ``"auto"``) joins one.
        **options: Passed to ``ray.init``.

    Returns:
        What ``ray.init`` returns.
    """
    import ray

    apply_offline_env()
    # Ray lowers its workers' priority (nice 15) by default. Ours are the
    # service itself, sharing the machine with the database: at nice 15
    # their event loops lag ~25 ms behind under load (measured), which
    # inflates every provider call and database reply.
    os.environ.setdefault("RAY_worker_niceness", "0")
    kwargs: dict[str, Any] = {"namespace": namespace, **options}
    if address == "local":
        kwargs.update(
            num_cpus=num_cpus,
            include_dashboard=include_dashboard,
            dashboard_host="127.0.0.1",
            object_store_memory=object_store_memory,
            # Bind Ray's own servers to loopback, not the LAN address.
            _node_ip_address="127.0.0.1",
        )
        if dashboard_port is not None:
            kwargs["dashboard_port"] = dashboard_port
    with _home(prepare_ray_home(state_dir)):
        return ray.init(address=address, **kwargs)
