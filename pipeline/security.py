"""API keys: generation, peppered hashing and constant-time checks.

A client key looks like ``msk_<prefix>_<secret>``. The prefix is public
and identifies the client (so a bare Bearer key finds its owner); the
whole key is stored only as HMAC-SHA256 under ``API_KEY_PEPPER``.
Comparisons are constant-time, and a lookup that finds no client still
computes a hash so timing does not reveal which prefixes exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_SCHEME = "msk"
PREFIX_BYTES = 6
SECRET_BYTES = 32


@dataclass(frozen=True)
class IssuedKey:
    """A freshly generated client key (shown to the client once)."""

    key: str
    prefix: str

    def __repr__(self) -> str:
        return f"IssuedKey(prefix={self.prefix!r}, key=<hidden>)"


def generate_client_key() -> IssuedKey:
    """Create a new client key from the OS's secure random source."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return IssuedKey(f"{KEY_SCHEME}_{prefix}_{secret}", prefix)


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed client key, else None."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    return prefix


def hash_key(key: str, pepper: str) -> str:
    """HMAC-SHA256 of ``key`` under ``pepper``, hex encoded."""
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def verify_key(key: str, stored_hash: str | None, pepper: str) -> bool:
    """Check ``key`` against a stored hash in constant time.

    With no stored hash (unknown client) a hash is still computed and
    compared, so both paths take the same time.
    """
    computed = hash_key(key, pepper)
    expected = stored_hash or hash_key("", pepper)
    return hmac.compare_digest(computed, expected) and stored_hash is not None


def admin_key_matches(provided: str | None, expected: str) -> bool:
    """Compare an admin key in constant time (None never matches)."""
    if not expected:
        return False
    return hmac.compare_digest((provided or "").encode(), expected.encode())
