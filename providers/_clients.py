"""SDK client cache: one client per (event loop, settings, key).

Building an SDK client is slow and each holds a connection pool, so an
adapter reuses clients across thousands of calls. A pool is bound to the
event loop that opened its connections, so clients are kept per running
loop (weakly: a loop that is gone takes its clients with it). Keys are
held only as a salted digest, so nothing in the cache can leak a key
through a repr or a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

C = TypeVar("C")
S = TypeVar("S", bound=Hashable)

# Per-process salt: digests cannot be compared across processes or logs.
_SALT = os.urandom(16)


def key_fingerprint(api_key: str | None) -> str:
    """Digest a key so it can be used as part of a cache key.

    Args:
        api_key: The key, or None.

    Returns:
        A short salted digest ("" for no key).
    """
    if api_key is None:
        return ""
    return hashlib.blake2b(
        api_key.encode(), key=_SALT, digest_size=16
    ).hexdigest()


class ClientCache(Generic[S, C]):
    """Builds SDK clients on first use and reuses them per event loop.

    Args:
        build: Makes a client from settings and a key.
        close: Releases a client's connections.
    """

    def __init__(
        self,
        build: Callable[[S, str | None], C],
        close: Callable[[C], Awaitable[None]],
    ) -> None:
        self._build = build
        self._close = close
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[S, str], C]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"ClientCache(loops={len(self._by_loop)})"

    def get(self, settings: S, api_key: str | None) -> C:
        """Return the client for these settings and key, building it once.

        Args:
            settings: The adapter's parsed, hashable settings.
            api_key: The key the client authenticates with.

        Returns:
            The cached or new client.
        """
        loop = asyncio.get_running_loop()
        clients = self._by_loop.get(loop)
        if clients is None:
            clients = self._by_loop[loop] = {}
        cache_key = (settings, key_fingerprint(api_key))
        client = clients.get(cache_key)
        if client is None:
            client = clients[cache_key] = self._build(settings, api_key)
        return client

    async def aclose(self) -> None:
        """Close and forget the clients of the running event loop."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.pop(loop, {})
        for client in clients.values():
            await self._close(client)
