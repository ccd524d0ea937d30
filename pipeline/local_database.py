"""Finding the embedded database a local ``metasync up`` started.

The launcher records a running instance in ``<state>/run/db.json``;
other local processes (the admin CLI, driver scripts) read it here to
reach the same database without any variable set.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path


def record_path(state_dir: str | Path) -> Path:
    """Where a running embedded database is recorded."""
    return Path(state_dir) / "run" / "db.json"


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def running_uri(state_dir: str | Path) -> str | None:
    """The URI of the recorded database if it is up, else None."""
    record = record_path(state_dir)
    if not record.exists():
        return None
    info = json.loads(record.read_text())
    if port_open("127.0.0.1", info["port"]):
        uri: str = info["uri"]
        return uri
    return None
