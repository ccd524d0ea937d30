"""Loopback helpers for tests, and waits that fail with a clear message."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds, or fail the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def wait_until_async(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> None:
    """:func:`wait_until` on an event loop; ``condition`` may be async."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
