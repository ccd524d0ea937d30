"""How a job runs: live calls, the providers' batch APIs, or either.

``mode`` is ``live`` (the default), ``batch`` or ``auto``; ``deadline`` is
how long the job may take (``"90s"``, ``"45m"``, ``"24h"``, ``"2d"``). A
deadline alone means ``auto``: batch while the deadline allows, live
otherwise (the workers' rule: :mod:`pipeline.worker.batch_deadline`).
``auto`` needs a deadline; ``batch`` with one needs at least
the providers' batch window (:data:`BATCH_WINDOW`). The job stores its
deadline as an instant (creation plus the duration), so a request
repeated with the same idempotency key is the same request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pipeline.errors import ValidationFailed

JobMode = Literal["live", "batch", "auto"]
MODES: tuple[JobMode, ...] = ("live", "batch", "auto")
#: What the vendors' batch APIs promise: an answer within a day.
BATCH_WINDOW = timedelta(hours=24)
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Read a deadline such as ``"24h"``.

    Raises:
        ValidationFailed: Naming ``deadline``.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValidationFailed.single(
            "deadline",
            "a positive whole number and a unit: s, m, h or d (e.g. 24h)",
        )
    number, unit = match.groups()
    return timedelta(seconds=int(number) * _UNIT_SECONDS[unit])


def job_mode(
    mode: str | None, deadline: str | None
) -> tuple[JobMode, timedelta | None]:
    """Resolve a request's ``mode`` and ``deadline``.

    Args:
        mode: ``live``, ``batch``, ``auto`` or None.
        deadline: A duration, or None.

    Returns:
        The mode and the deadline as a duration.

    Raises:
        ValidationFailed: Naming ``mode`` or ``deadline``.
    """
    duration = parse_duration(deadline) if deadline is not None else None
    if mode is None:
        return ("auto" if duration is not None else "live"), duration
    if mode not in MODES:
        raise ValidationFailed.single("mode", "one of live, batch, auto")
    if mode == "auto" and duration is None:
        raise ValidationFailed.single(
            "deadline", "required with mode auto (e.g. 48h)"
        )
    if mode == "batch" and duration is not None and duration < BATCH_WINDOW:
        raise ValidationFailed.single(
            "deadline",
            "a batch job may take the providers' whole 24h window; "
            "use mode auto for a shorter deadline",
        )
    resolved: JobMode = mode
    return resolved, duration
