"""A loopback TCP proxy that can cut a connection on demand.

Tests put it between a client and a server (the database, a provider) to
make the server "briefly gone": :meth:`TcpProxy.cut` resets every open
connection and refuses new ones until :meth:`TcpProxy.restore`.
:meth:`TcpProxy.cut_before_reply` does the same at a chosen moment: once
a request holding given bytes reached the server, before its reply.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    """Forward 127.0.0.1:<port> to an upstream address."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._down = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._trip: bytes | None = None
        self._armed: set[socket.socket] = set()
        self.tripped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def cut(self) -> None:
        """Reset all connections and refuse new ones."""
        self._down.set()
        with self._lock:
            for sock in list(self._open):
                _reset(sock)
            self._open.clear()

    def cut_before_reply(self, marker: bytes) -> threading.Event:
        """Cut (as :meth:`cut`) when the server answers a request that
        holds ``marker``: the server applied it, the client never learns.

        Returns:
            An event set once the cut happened.
        """
        with self._lock:
            self._trip = marker
            self.tripped.clear()
        return self.tripped

    def restore(self) -> None:
        """Accept connections again."""
        self._down.clear()

    def close(self) -> None:
        """Stop the proxy."""
        self._closed.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump,
                    args=(source, target, source is client),
                    daemon=True,
                ).start()

    def _pump(
        self, source: socket.socket, target: socket.socket, upstream: bool
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self._trips(source, target, data, upstream):
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def _trips(
        self,
        source: socket.socket,
        target: socket.socket,
        data: bytes,
        upstream: bool,
    ) -> bool:
        """Arm on the marked request; cut instead of passing its reply."""
        with self._lock:
            if upstream:
                if self._trip is not None and self._trip in data:
                    self._trip = None
                    self._armed.add(target)
                return False
            if source not in self._armed:
                return False
            self._armed.discard(source)
        self.cut()
        self.tripped.set()
        return True


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed peer would.

    The shutdown first wakes a pump thread blocked reading this socket;
    closing alone would leave it blocked on a file descriptor number that
    a new connection may reuse (and then steal its bytes).
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_LINGER,
            b"\x01\x00\x00\x00\x00\x00\x00\x00",
        )
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()
