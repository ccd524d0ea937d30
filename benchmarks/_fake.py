"""The fake provider a benchmark calls, in its own process, and its controls.

Started with the launcher the product uses for ``metasync up``
(:class:`serve_app.local_services.FakeProviderProcess`, bound to
127.0.0.1); this module adds the ``/_fake/*`` control routes a benchmark
needs: behaviours per model, counters, reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2

from serve_app.local_services import FakeProviderProcess, free_port


class FakeServer:
    """``python -m providers.fake`` on a free loopback port.

    Args:
        state_dir: Where its log goes (``logs/fake-provider.log``).
    """

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = FakeProviderProcess(state_dir, self.port)
        self._process.start()
        child = self._process.child.process
        assert child is not None
        self.pid = child.pid
        self._http = httpx2.Client(base_url=self.url, timeout=30)

    def configure(self, models: dict[str, Any]) -> None:
        """Set the behaviours of some models (others keep theirs)."""
        response = self._http.post("/_fake/config", json={"models": models})
        response.raise_for_status()

    def reset(self) -> None:
        """Forget every counter (requests, peak in flight)."""
        self._http.post("/_fake/reset").raise_for_status()

    def stats(self) -> dict[str, dict[str, Any]]:
        """What the server saw, per model."""
        models: dict[str, dict[str, Any]] = self._http.get(
            "/_fake/stats"
        ).json()["models"]
        return models

    def requests(self, models: list[str]) -> int:
        """Requests the server received for these models."""
        seen = self.stats()
        return sum(int(seen.get(m, {}).get("requests", 0)) for m in models)

    def peaks(self, models: list[str]) -> list[int]:
        """Most requests in flight at once, per model."""
        seen = self.stats()
        return [int(seen.get(m, {}).get("maxInFlight", 0)) for m in models]

    def arrivals(self, models: list[str]) -> list[float]:
        """When each request for these models arrived (epoch seconds)."""
        seen = self.stats()
        return sorted(
            t for m in models for t in seen.get(m, {}).get("timestamps", ())
        )

    def stop(self) -> None:
        """Stop the process."""
        self._http.close()
        self._process.stop()
