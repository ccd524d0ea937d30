"""The fake provider a benchmark calls, in its own process, and its controls.

Started with the launcher the product uses for ``metasync up``
(:class:`serve_app.local_services.FakeProviderProcess`, bound to
127.0.0.1) and driven with its control client
(:class:`providers.fake.control.FakeControl`); this module adds the
figures a benchmark reads off it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from providers.fake.control import FakeControl
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
        self._control = FakeControl(self.url)

    def configure(self, models: dict[str, Any]) -> None:
        """Set the behaviours of some models (others keep theirs)."""
        self._control.configure(models)

    def reset(self) -> None:
        """Forget every counter (requests, peak in flight)."""
        self._control.reset()

    def stats(self, model: str) -> dict[str, Any]:
        """What the server saw of one model (zeros if never called)."""
        return self._control.stats(model)

    def requests(self, models: list[str]) -> int:
        """Requests the server received for these models."""
        seen = self._control.models()
        return sum(int(seen.get(m, {}).get("requests", 0)) for m in models)

    def peaks(self, models: list[str]) -> list[int]:
        """Most requests in flight at once, per model."""
        seen = self._control.models()
        return [int(seen.get(m, {}).get("maxInFlight", 0)) for m in models]

    def batch_calls(self) -> dict[str, dict[str, int]]:
        """Batch API calls so far per vendor (files, creates, polls,
        downloads, cancels, lists, lines)."""
        return self._control.batches()

    def arrivals(self, models: list[str]) -> list[float]:
        """When each request for these models arrived (epoch seconds)."""
        seen = self._control.models()
        return sorted(
            t for m in models for t in seen.get(m, {}).get("timestamps", ())
        )

    def stop(self) -> None:
        """Stop the process."""
        self._process.stop()
