"""Running the fake provider: in a background thread, or in the foreground.

:class:`FakeProviderServer` is for tests and benchmarks: a context manager
that serves on 127.0.0.1 (a free port by default) from its own event loop
in a daemon thread, so the code under test keeps its own loop, and that
exposes the server's state directly (``configure``, ``stats``, ``reset``).
:func:`run` serves in the foreground until interrupted (the CLI).
:func:`fake_model_config` writes the model config that points an adapter
at a fake server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .app import FakeProviderApp
from .config import FakeConfig

T = TypeVar("T")

DEFAULT_PORT = 8799
_START_TIMEOUT_SECONDS = 10.0

# Where each adapter finds its vendor's routes under the server's root.
_CONFIG_BY_PROVIDER: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "openai": lambda url, model: {"modelId": model, "baseUrl": f"{url}/v1"},
    "azure_openai": lambda url, model: {
        "endpoint": url,
        "deployment": model,
        "apiVersion": "2024-10-21",
    },
    "azure_inference": lambda url, model: {
        "endpoint": f"{url}/models",
        "modelId": model,
    },
    "anthropic": lambda url, model: {"modelId": model, "baseUrl": url},
    "gemini": lambda url, model: {"modelId": model, "baseUrl": url},
}


def fake_model_config(
    provider: str, model_id: str, url: str, **extra: Any
) -> dict[str, Any]:
    """Build the model config that sends an adapter to a fake server.

    Args:
        provider: The adapter's registry name.
        model_id: The upstream model id (the fake's behaviour key).
        url: The fake server's root URL, e.g. ``http://127.0.0.1:8799``.
        **extra: More config fields (e.g. ``timeoutSeconds=5``).

    Returns:
        The config, with ``auth: none``.

    Raises:
        KeyError: The provider has no fake routes.
    """
    config = _CONFIG_BY_PROVIDER[provider](url.rstrip("/"), model_id)
    return {**config, "auth": "none", **extra}


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class FakeProviderServer:
    """A fake provider served from a background thread.

    Args:
        config: An initial configuration document (see
            :mod:`providers.fake.config`).
        host: The address to bind.
        port: The port; 0 picks a free one.

    Example::

        with FakeProviderServer({"default": {"latencyMs": 5}}) as fake:
            config = fake_model_config("openai", "m1", fake.url)
            ...
            assert fake.stats("m1")["maxInFlight"] <= 4
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app = FakeProviderApp(FakeConfig(config))
        self._sock = _bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeProviderServer:
        """Start serving; return once the server accepts connections.

        Returns:
            The server itself.

        Raises:
            RuntimeError: It did not start in time.
        """
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve,
            args=(ready,),
            name="fake-provider",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError("the fake provider server did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        # Cancel handlers of clients that hang up, so in-flight counts
        # drop as soon as a caller cancels.
        runner = web.AppRunner(
            self.app.build(), handler_cancellation=True, access_log=None
        )
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.SockSite(runner, self._sock).start())
        self._runner = runner
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_START_TIMEOUT_SECONDS)
        self._sock.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_loop(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the server's loop (its state lives there)."""
        if self._loop is None:
            return func()

        async def call() -> T:
            return func()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(_START_TIMEOUT_SECONDS)

    def configure(
        self, document: Mapping[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change behaviours at run time.

        Args:
            document: A configuration document.
            **fields: Or its fields as keywords (``models=...``,
                ``default=...``, ``seed=...``, ``replace=...``).

        Returns:
            The resulting configuration document.

        Raises:
            BehaviourError: The document is invalid (nothing changed).
        """
        merged = {**(document or {}), **fields}
        return self._on_loop(lambda: self.app.configure(merged))

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Read what the server saw.

        Args:
            model: One model's upstream id, or None for all models.

        Returns:
            One model's counters (zeros if it was never called), or
            ``{"models": {name: counters}, "batches": {vendor: counters}}``.
        """
        if model is None:
            return self._on_loop(self.app.stats)
        return self._on_loop(lambda: self.app.stats_of(model).to_json())

    def reset(self) -> None:
        """Forget every counter, batch and file; restart the generators."""
        self._on_loop(self.app.reset)

    def batch_stats(self) -> dict[str, dict[str, int]]:
        """Batch calls per vendor: files, creates, polls, cancels..."""
        return self._on_loop(self.app.batches.to_json)


def run(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    config: Mapping[str, Any] | None = None,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the fake provider in the foreground until interrupted.

    Args:
        host: The address to bind.
        port: The port.
        config: A configuration document.
        on_ready: Called with the root URL once serving.
    """
    app = FakeProviderApp(FakeConfig(config)).build()
    url = f"http://{host}:{port}"

    async def announce(_: web.Application) -> None:
        if on_ready is not None:
            on_ready(url)

    app.on_startup.append(announce)
    web.run_app(
        app,
        host=host,
        port=port,
        handler_cancellation=True,
        access_log=None,
        print=None,
    )
