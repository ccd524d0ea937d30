"""What the fake server saw, per model: the evidence limit tests rely on.

For each model: the request count, the requests in flight now and the most
ever in flight at once (counted from the moment a request arrives, before
its latency, until its last byte or its disconnect), the start time of
every request (epoch seconds), the status codes sent, the faults injected
and the clients that went away mid-request. Served on ``GET /_fake/stats``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelStats:
    """Counters of one model (mutated on the server's event loop only)."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    timestamps: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    disconnects: int = 0

    def begin(self, now: float) -> int:
        """Count a request in; return its 1-based call number."""
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.timestamps.append(now)
        return self.requests

    def end(self) -> None:
        """Count a request out (after its last byte or its disconnect)."""
        self.in_flight -= 1

    def to_json(self) -> dict[str, Any]:
        """Render the counters with camelCase keys."""
        return {
            "requests": self.requests,
            "inFlight": self.in_flight,
            "maxInFlight": self.max_in_flight,
            "timestamps": list(self.timestamps),
            "statusCounts": {str(k): v for k, v in self.statuses.items()},
            "faults": dict(self.faults),
            "disconnects": self.disconnects,
        }


class ModelState:
    """A model's counters plus its seeded random generators.

    Args:
        name: The upstream model id.
        seed: The configuration's seed.
    """

    def __init__(self, name: str, seed: int) -> None:
        self.stats = ModelStats()
        # Separate generators: changing latency must not move the faults.
        self.fault_rng = random.Random(f"{seed}:{name}:faults")
        self.latency_rng = random.Random(f"{seed}:{name}:latency")


class StatsBook:
    """Every model's state, created on first request.

    Args:
        seed: The seed for new models' generators.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._models: dict[str, ModelState] = {}

    def model(self, name: str) -> ModelState:
        """Return a model's state, creating it on first use."""
        state = self._models.get(name)
        if state is None:
            state = self._models[name] = ModelState(name, self.seed)
        return state

    def reset(self, seed: int | None = None) -> None:
        """Forget every counter and restart the generators.

        Args:
            seed: A new seed, or None to keep the current one.
        """
        if seed is not None:
            self.seed = seed
        self._models.clear()

    def to_json(self) -> dict[str, Any]:
        """Render all models' stats: ``{"models": {name: {...}}}``."""
        return {
            "models": {
                name: state.stats.to_json()
                for name, state in self._models.items()
            }
        }
