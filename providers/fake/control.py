"""A client of the fake provider's control routes (``/_fake/*``).

What tests and benchmarks do to a running fake provider: set model
behaviours, forget counters, read what it saw. Standard library only, so
every user of the fake server (the product's own local runs included)
can drive it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, cast

#: What :meth:`FakeControl.stats` reports for a model never called.
NEVER_CALLED: dict[str, Any] = {
    "requests": 0,
    "maxInFlight": 0,
    "inFlight": 0,
    "timestamps": [],
}


class FakeControl:
    """Drives the fake provider server at ``url``.

    Args:
        url: Its base URL (``http://127.0.0.1:PORT``).
        timeout_s: Bound of each control request.
    """

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self._timeout_s) as reply:
            return json.loads(reply.read() or b"null")

    def healthy(self) -> bool:
        """Whether it answers its health route."""
        try:
            self._call("GET", "/_fake/health")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def configure(self, models: dict[str, Any]) -> None:
        """Set the behaviours of some models (others keep theirs).

        Raises:
            urllib.error.HTTPError: It refused the configuration (its
                body names the bad field).
        """
        self._call("POST", "/_fake/config", {"models": models})

    def reset(self) -> None:
        """Forget every counter (requests, peaks, arrival times)."""
        self._call("POST", "/_fake/reset")

    def models(self) -> dict[str, dict[str, Any]]:
        """What it saw, per model."""
        seen = self._call("GET", "/_fake/stats")["models"]
        return cast(dict[str, dict[str, Any]], seen)

    def batches(self) -> dict[str, dict[str, int]]:
        """Batch calls per vendor: files, creates, polls, cancels..."""
        seen = self._call("GET", "/_fake/stats").get("batches") or {}
        return cast(dict[str, dict[str, int]], seen)

    def stats(self, model: str) -> dict[str, Any]:
        """What it saw of one model (zeros if never called)."""
        return self.models().get(model, dict(NEVER_CALLED))
