"""How a fake model's provider batches behave: pace, outcome, line faults.

Read from the ``batch`` field of a model's behaviour::

    batch:
      durationMs: 300          # creation to end (the vendors' 24 h, sped up)
      outcome: completed       # or expired (partial results), failed
      finishedFraction: 0.5    # with expired: the share of lines that ran
      lineErrors:              # lines that end in an error of their own
        rate: 0.1              # a share of lines, chosen by custom id hash
        customIds: [row-3]     # or these lines
        status: 500            # the HTTP status of the error (500, 429, 400)

A batch is validating for the first tenth of its duration, in progress
until the end, then ended. Which lines fail or finish is decided by a
hash of the seed and the custom id, so it does not depend on the order
of lines or on other batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = frozenset({"completed", "expired", "failed"})
LINE_ERROR_STATUSES = frozenset({400, 429, 500, 503})
DEFAULT_DURATION_MS = 200.0
_FIELDS = frozenset(
    {"durationMs", "outcome", "finishedFraction", "lineErrors"}
)
_LINE_ERROR_FIELDS = frozenset({"rate", "customIds", "status"})


class BatchBehaviourError(ValueError):
    """A ``batch`` mapping is invalid (the message says where)."""


def unit_hash(*parts: object) -> float:
    """A stable uniform value in [0, 1) from the parts' text."""
    text = "\x00".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class LineErrors:
    """Which lines of a batch fail on their own, and how."""

    rate: float = 0.0
    custom_ids: frozenset[str] = frozenset()
    status: int = 500

    def hits(self, seed: int, custom_id: str) -> bool:
        """Whether the line with this id fails."""
        if custom_id in self.custom_ids:
            return True
        return bool(self.rate) and unit_hash(seed, custom_id) < self.rate


@dataclass(frozen=True, slots=True)
class BatchBehaviour:
    """The pace and faults of a model's provider batches."""

    duration_ms: float = DEFAULT_DURATION_MS
    outcome: str = "completed"
    finished_fraction: float = 0.0
    line_errors: LineErrors = field(default_factory=LineErrors)

    @classmethod
    def parse(cls, raw: Any, where: str) -> BatchBehaviour:
        """Read the ``batch`` mapping.

        Args:
            raw: The mapping (None for the defaults).
            where: Its location, for error messages.

        Returns:
            The batch behaviour.

        Raises:
            BatchBehaviourError: Naming the bad field.
        """
        if raw is None:
            return cls()
        _check(raw, _FIELDS, where)
        duration = _fraction_or_number(raw, "durationMs", where, cap=None)
        outcome = raw.get("outcome", "completed")
        if outcome not in OUTCOMES:
            raise BatchBehaviourError(
                f"{where}.outcome: must be one of "
                + ", ".join(sorted(OUTCOMES))
            )
        return cls(
            duration_ms=DEFAULT_DURATION_MS if duration is None else duration,
            outcome=outcome,
            finished_fraction=_fraction_or_number(
                raw, "finishedFraction", where, cap=1.0
            )
            or 0.0,
            line_errors=_line_errors(
                raw.get("lineErrors"), f"{where}.lineErrors"
            ),
        )


def _check(raw: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise BatchBehaviourError(f"{where}: must be a mapping")
    for key in raw:
        if key not in allowed:
            raise BatchBehaviourError(
                f"{where}.{key}: unknown field; expected one of "
                + ", ".join(sorted(allowed))
            )


def _fraction_or_number(
    raw: Mapping[str, Any], key: str, where: str, *, cap: float | None
) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BatchBehaviourError(f"{where}.{key}: must be a number")
    if value < 0 or (cap is not None and value > cap):
        bound = f"between 0 and {cap:g}" if cap is not None else ">= 0"
        raise BatchBehaviourError(f"{where}.{key}: must be {bound}")
    return float(value)


def _line_errors(raw: Any, where: str) -> LineErrors:
    if raw is None:
        return LineErrors()
    _check(raw, _LINE_ERROR_FIELDS, where)
    ids = raw.get("customIds") or ()
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise BatchBehaviourError(f"{where}.customIds: must be a list")
    status = raw.get("status", 500)
    if status not in LINE_ERROR_STATUSES:
        raise BatchBehaviourError(
            f"{where}.status: must be one of "
            + ", ".join(str(s) for s in sorted(LINE_ERROR_STATUSES))
        )
    return LineErrors(
        rate=_fraction_or_number(raw, "rate", where, cap=1.0) or 0.0,
        custom_ids=frozenset(str(i) for i in ids),
        status=status,
    )
