"""Names of the project's Ray actors (found by name, in one namespace)."""

from __future__ import annotations

COORDINATOR_NAME = "metasync-limits"


def worker_name(provider: str, replica: int) -> str:
    """The actor name of one replica of a provider's worker."""
    return f"metasync-worker-{provider}-{replica}"
