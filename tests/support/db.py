"""Database helpers for tests."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest


def host_and_port(uri: str) -> tuple[str, int]:
    """The single server of a URI, for putting a proxy in front of it.

    Skips the test for URIs that name several servers or an SRV record
    (the suite pointed at a real cluster): a one-port proxy cannot stand
    in for them.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "mongodb" or "," in parsed.netloc or not parsed.port:
        pytest.skip("needs a single-host mongodb:// URI to proxy")
    return parsed.hostname or "127.0.0.1", parsed.port
