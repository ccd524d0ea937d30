"""The fake provider server in its own process, driven over HTTP.

Workers (Ray actors) call it over loopback like a real vendor; tests
configure behaviours and read its counters through ``/_fake/*``. It is
started the way ``metasync up`` starts it and driven by the product's
control client.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from providers.fake.control import FakeControl
from serve_app.local_services import FakeProviderProcess as _Launcher
from tests.support.net import free_port


class FakeProviderProcess:
    """``python -m providers.fake`` on a free port (log under ``logs/``)."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = _Launcher(state_dir, self.port)
        self._process.start()
        self._control = FakeControl(self.url)

    def configure(self, models: dict[str, Any]) -> None:
        """Set behaviours of some models (others keep theirs)."""
        self._control.configure(models)

    def stats(self, model: str) -> dict[str, Any]:
        """What the server saw of one model (zeros if never called)."""
        return self._control.stats(model)

    def batch_stats(self) -> dict[str, dict[str, int]]:
        """Batch calls per vendor (creates, polls, cancels...)."""
        return self._control.batches()

    def stop(self) -> None:
        """Stop the process."""
        self._process.stop()


def unique_model(prefix: str = "m") -> str:
    """A model name no other test uses (its fake stats are its own)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
