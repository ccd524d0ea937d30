"""A collection wrapper that fails or pauses chosen calls, for race tests.

Wraps a real (async) collection: every call goes through to it, except
those a test arranged to fail (before the server sees them, or after it
applied them: a lost reply) or to wait at a gate until the test opens it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.errors import AutoReconnect


class Gate:
    """Holds a call back until opened; says when a call reached it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    def open(self) -> None:
        """Let the held call (and any later one) through."""
        self.opened.set()


class FlakyCollection:
    """A collection whose next calls of a method can fail or wait."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self._plans: dict[str, list[Any]] = {}

    def fail_next(
        self, method: str, *, applied: bool = False, after: int = 0
    ) -> None:
        """Make a coming call of ``method`` raise a connection error.

        Args:
            method: The collection method (``bulk_write``...).
            applied: Whether the server applies the call first (the
                reply is lost) or never sees it.
            after: How many calls of it to let through first.
        """
        plans = self._plans.setdefault(method, [])
        plans += ["pass"] * after + ["after" if applied else "before"]

    def gate_next(self, method: str, *, after: int = 0) -> Gate:
        """Make a coming call of ``method`` wait until the gate opens.

        Args:
            method: The collection method.
            after: How many calls of it to let through first.
        """
        gate = Gate()
        plans = self._plans.setdefault(method, [])
        plans += ["pass"] * after + [gate]
        return gate

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._collection, name)
        plans = self._plans.get(name)
        if not plans or not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            plan = plans.pop(0)
            if isinstance(plan, Gate):
                plan.reached.set()
                await plan.opened.wait()
            elif plan == "before":
                raise AutoReconnect(f"{name}: connection lost (test)")
            result = await target(*args, **kwargs)
            if plan == "after":
                raise AutoReconnect(f"{name}: reply lost (test)")
            return result

        return call
