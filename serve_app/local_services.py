"""Helper processes of a local run: the embedded database, the fake provider.

Both run as separate processes (SecantusDB is GPL-2.0 and is only ever
talked to over the MongoDB wire protocol) bound to 127.0.0.1, and die
with the process that started them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.local_database import port_open, record_path, running_uri
from pipeline.logging import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when its parent dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ChildProcess:
    """A helper server started by this process."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch it, its output going to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def wait_for_port(self, port: int, timeout_s: float = 30.0) -> None:
        """Block until it listens on ``port``.

        Raises:
            RuntimeError: It exited or did not listen in time.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if port_open("127.0.0.1", port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Terminate it (SIGTERM, then SIGKILL) and wait until it is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LocalDatabase:
    """The embedded MongoDB-compatible server, kept in the state dir.

    Its data survives restarts (``<state>/db``). A running instance is
    recorded in ``<state>/run/db.json`` so other commands (``metasync
    admin``) find it.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.record = record_path(self.state_dir)
        self.child: ChildProcess | None = None
        self.uri: str | None = None

    def running_uri(self) -> str | None:
        """The URI of an instance already running, if any."""
        return running_uri(self.state_dir)

    def start(self) -> str:
        """Start the server (or reuse a running one) and return its URI.

        Raises:
            RuntimeError: The server package is missing or did not start.
        """
        existing = self.running_uri()
        if existing:
            self.uri = existing
            return existing
        try:
            import importlib.util

            if importlib.util.find_spec("secantus") is None:
                raise ImportError
        except ImportError:
            raise RuntimeError(
                "the embedded database needs the 'local' extra: "
                "pip install -e '.[local]' (or set DB_CONNECTION_STRING)"
            ) from None
        port = free_port()
        storage = self.state_dir / "db"
        storage.mkdir(parents=True, exist_ok=True)
        self.child = ChildProcess(
            "embedded database",
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(storage),
                "--log-level",
                "WARNING",
            ],
            self.state_dir / "logs" / "db.log",
        )
        self.child.start()
        self.child.wait_for_port(port, timeout_s=60)
        self.uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(
            json.dumps({"uri": self.uri, "port": port, "pid": os.getpid()})
        )
        log.info("embedded_database_started", port=port, path=str(storage))
        return self.uri

    def terminate(self) -> None:
        """Ask the server to stop, if this object started it; no wait."""
        if self.child is not None:
            self.child.terminate()

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.child is None:
            return
        self.child.stop()
        self.child = None
        self.record.unlink(missing_ok=True)


class FakeProviderProcess:
    """The fake provider server that the demo models point at."""

    def __init__(self, state_dir: str | Path, port: int) -> None:
        self.port = port
        self.child = ChildProcess(
            "fake provider",
            [
                sys.executable,
                "-m",
                "providers.fake",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            Path(state_dir) / "logs" / "fake-provider.log",
        )

    def start(self) -> None:
        """Start it unless something already serves its port.

        Raises:
            RuntimeError: It did not start.
        """
        if port_open("127.0.0.1", self.port):
            log.info("fake_provider_already_running", port=self.port)
            return
        self.child.start()
        self.child.wait_for_port(self.port)

    def terminate(self) -> None:
        """Ask it to stop, if this object started it; no wait."""
        self.child.terminate()

    def stop(self) -> None:
        """Stop it if this object started it."""
        self.child.stop()
