"""The fake provider server in its own process, driven over HTTP.

Workers (Ray actors) call it over loopback like a real vendor; tests
configure behaviours and read its counters through ``/_fake/*``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx2

from tests.support.net import free_port, wait_until


class FakeProviderProcess:
    """``python -m providers.fake`` on a free port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (log_dir / "fake-provider.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "providers.fake", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._http = httpx2.Client(base_url=self.url, timeout=10)

        def up() -> bool:
            try:
                return self._http.get("/_fake/stats").status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(up, timeout_s=30, what="the fake provider")

    def configure(self, models: dict[str, Any]) -> None:
        """Set behaviours of some models (others keep theirs)."""
        response = self._http.post("/_fake/config", json={"models": models})
        assert response.status_code == 200, response.text

    def stats(self, model: str) -> dict[str, Any]:
        """What the server saw of one model."""
        data = self._http.get("/_fake/stats").json()
        empty = {
            "requests": 0,
            "maxInFlight": 0,
            "inFlight": 0,
            "timestamps": [],
        }
        return data["models"].get(model, empty)

    def stop(self) -> None:
        """Stop the process."""
        self._http.close()
        self._process.terminate()
        self._process.wait(10)
        self._log.close()


def unique_model(prefix: str = "m") -> str:
    """A model name no other test uses (its fake stats are its own)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
