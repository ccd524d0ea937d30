"""How a fake model behaves: latency, pacing, answers and injected faults.

A behaviour is read from a camelCase mapping (a config file, or the JSON of
``POST /_fake/config``)::

    latencyMs: 200                      # or {min: 100, max: 300}, uniform
    firstByteDelayMs: 0                 # after the headers, before the body
    streamTokensPerSecond: 50           # stream pacing; absent = no pacing
    apiKey: secret                      # if set, other keys get a 401
    reply: "fixed text"                 # default: echo the last user message
    rules:                              # first match (system + user) wins
      - {match: "(?i)translate", reply: "Bonjour"}
    simulate: task                      # or control, meta; wins over both
    faults:                             # first one that triggers wins
      - {kind: rate_limit, rate: 0.1, retryAfter: 2, retryAfterMs: 1500}
      - {kind: server_error, onCalls: [3, 7], status: 503}
      - {kind: cut_stream, everyN: 5, afterTokens: 2}
    batch: {durationMs: 300, lineErrors: {rate: 0.1}}   # provider batches

Fault kinds: ``rate_limit`` (429), ``server_error`` (5xx), ``bad_request``
(400), ``auth`` (the vendor's bad-key error), ``content_filter`` (``stage:
prompt`` is the vendor's refusal error, ``stage: answer`` a normal answer
cut by the filter), ``cut_stream`` (the connection drops mid-body),
``no_end_marker`` (a stream ends cleanly without its end marker),
``stream_error`` (an error event inside a 200 stream; ``status: 429`` makes
it a rate limit) and ``slow_first_byte`` (``delayMs`` before the body).
A fault with no trigger (``rate``, ``onCalls``, ``everyN``) fires on every
call. Randomness comes from generators seeded per model, so a run with the
same seed and the same call order behaves the same. ``batch`` sets how
the vendors' batch APIs behave for the model (see
:mod:`providers.fake.batch_behaviour`).

``simulate`` answers from :mod:`providers.fake.simulation`: ``task`` is
the arithmetic model whose accuracy depends on the system prompt,
``control`` the one no prompt changes (both answer the last user
message),
``meta`` the scripted meta model (it reads the system text and the last
user message, joined by a blank line).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from . import simulation
from .batch_behaviour import BatchBehaviour, BatchBehaviourError

FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "bad_request",
        "auth",
        "content_filter",
        "cut_stream",
        "no_end_marker",
        "stream_error",
        "slow_first_byte",
    }
)
# Faults that replace the whole response with an HTTP error.
ERROR_FAULTS = frozenset({"rate_limit", "server_error", "bad_request", "auth"})
# Faults that only make sense for streamed answers; ignored otherwise.
STREAM_ONLY_FAULTS = frozenset({"no_end_marker", "stream_error"})

_BEHAVIOUR_FIELDS = frozenset(
    {
        "latencyMs",
        "firstByteDelayMs",
        "streamTokensPerSecond",
        "apiKey",
        "reply",
        "rules",
        "faults",
        "simulate",
        "batch",
    }
)
SIMULATIONS = frozenset({"task", "control", "meta"})
_FAULT_FIELDS = frozenset(
    {
        "kind",
        "rate",
        "onCalls",
        "everyN",
        "status",
        "retryAfter",
        "retryAfterMs",
        "delayMs",
        "stage",
        "afterTokens",
    }
)


class BehaviourError(ValueError):
    """A behaviour or fault mapping is invalid (the message says where)."""


def _number(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BehaviourError(f"{where}.{key}: must be a number")
    if value < 0:
        raise BehaviourError(f"{where}.{key}: must not be negative")
    return float(value)


def _check_fields(
    raw: Mapping[str, Any], allowed: frozenset[str], where: str
) -> None:
    if not isinstance(raw, Mapping):
        raise BehaviourError(f"{where}: must be a mapping")
    for key in raw:
        if key not in allowed:
            raise BehaviourError(
                f"{where}.{key}: unknown field; expected one of "
                + ", ".join(sorted(allowed))
            )


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure and when it fires.

    Attributes:
        kind: One of :data:`FAULT_KINDS`.
        rate: Probability per call, or None.
        on_calls: 1-based call numbers (per model) it fires on.
        every_n: Fires on every n-th call, or None.
        status: HTTP status for error faults (defaults per kind).
        retry_after: Seconds for ``Retry-After`` (and Google's RetryInfo).
        retry_after_ms: Milliseconds for ``retry-after-ms``.
        delay_ms: The delay of ``slow_first_byte``.
        stage: ``prompt`` or ``answer`` for ``content_filter``.
        after_tokens: Tokens sent before a cut or an error event; None
            means half the answer.
    """

    kind: str
    rate: float | None = None
    on_calls: frozenset[int] = frozenset()
    every_n: int | None = None
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    delay_ms: float = 0.0
    stage: str = "prompt"
    after_tokens: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Fault:
        """Read a fault from its camelCase mapping.

        Args:
            raw: The mapping.
            where: Its location, for error messages.

        Returns:
            The fault.

        Raises:
            BehaviourError: Naming the bad field.
        """
        _check_fields(raw, _FAULT_FIELDS, where)
        kind = raw.get("kind")
        if kind not in FAULT_KINDS:
            kinds = ", ".join(sorted(FAULT_KINDS))
            raise BehaviourError(f"{where}.kind: must be one of {kinds}")
        rate = _number(raw, "rate", where)
        if rate is not None and rate > 1:
            raise BehaviourError(f"{where}.rate: must be between 0 and 1")
        on_calls = raw.get("onCalls") or ()
        if not isinstance(on_calls, Sequence) or not all(
            isinstance(n, int) and n > 0 for n in on_calls
        ):
            raise BehaviourError(
                f"{where}.onCalls: must be a list of call numbers (1-based)"
            )
        every_n = raw.get("everyN")
        if every_n is not None and (
            not isinstance(every_n, int) or every_n <= 0
        ):
            raise BehaviourError(f"{where}.everyN: must be a positive integer")
        status = raw.get("status")
        if status is not None and (
            not isinstance(status, int) or not 100 <= status <= 599
        ):
            raise BehaviourError(f"{where}.status: must be an HTTP status")
        stage = raw.get("stage", "prompt")
        if stage not in ("prompt", "answer"):
            raise BehaviourError(f"{where}.stage: must be prompt or answer")
        after = raw.get("afterTokens")
        if after is not None and (not isinstance(after, int) or after < 0):
            raise BehaviourError(
                f"{where}.afterTokens: must be a non-negative integer"
            )
        return cls(
            kind=kind,
            rate=rate,
            on_calls=frozenset(on_calls),
            every_n=every_n,
            status=status,
            retry_after=_number(raw, "retryAfter", where),
            retry_after_ms=_number(raw, "retryAfterMs", where),
            delay_ms=_number(raw, "delayMs", where) or 0.0,
            stage=stage,
            after_tokens=after,
        )

    def fires(self, call_number: int, rng: random.Random) -> bool:
        """Decide whether this fault hits the given call.

        Args:
            call_number: The model's 1-based call count.
            rng: The model's fault generator (drawn from only for rates).

        Returns:
            True when the fault applies.
        """
        if self.rate is None and not self.on_calls and self.every_n is None:
            return True
        if call_number in self.on_calls:
            return True
        if self.every_n is not None and call_number % self.every_n == 0:
            return True
        return self.rate is not None and rng.random() < self.rate


@dataclass(frozen=True, slots=True)
class Rule:
    """Answer ``reply`` when ``pattern`` matches the system + user text."""

    pattern: re.Pattern[str]
    reply: str


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Everything a fake model does on a call.

    Attributes:
        latency_ms: Fixed delay before the response, or a (min, max) range.
        first_byte_delay_ms: Delay between the headers and the body.
        stream_tokens_per_second: Stream pacing; None for none.
        api_key: The key callers must present, or None for any.
        reply: Fixed answer text, or None to echo the last user message.
        rules: Pattern-matched answers, tried before ``reply``.
        faults: Injected failures, tried in order.
        simulate: ``task``, ``control`` or ``meta`` to answer from the
            simulation (ahead of ``rules`` and ``reply``), or None.
        batch: How the model's provider batches behave.
    """

    latency_ms: float | tuple[float, float] = 0.0
    first_byte_delay_ms: float = 0.0
    stream_tokens_per_second: float | None = None
    api_key: str | None = None
    reply: str | None = None
    rules: tuple[Rule, ...] = ()
    faults: tuple[Fault, ...] = field(default_factory=tuple)
    simulate: str | None = None
    batch: BatchBehaviour = field(default_factory=BatchBehaviour)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Behaviour:
        """Read a behaviour from its camelCase mapping.

        Args:
            raw: The mapping.
            where: Its location, for error messages.

        Returns:
            The behaviour.

        Raises:
            BehaviourError: Naming the bad field.
        """
        _check_fields(raw, _BEHAVIOUR_FIELDS, where)
        return cls(
            latency_ms=_latency(raw.get("latencyMs"), f"{where}.latencyMs"),
            first_byte_delay_ms=_number(raw, "firstByteDelayMs", where) or 0,
            stream_tokens_per_second=_number(
                raw, "streamTokensPerSecond", where
            )
            or None,
            api_key=_optional_text(raw, "apiKey", where),
            reply=_optional_text(raw, "reply", where, allow_empty=True),
            rules=_rules(raw.get("rules") or (), f"{where}.rules"),
            faults=tuple(
                Fault.parse(item, f"{where}.faults[{i}]")
                for i, item in enumerate(_sequence(raw, "faults", where))
            ),
            simulate=_simulation(raw.get("simulate"), f"{where}.simulate"),
            batch=_batch(raw.get("batch"), f"{where}.batch"),
        )

    def latency_seconds(self, rng: random.Random) -> float:
        """Draw this call's delay before the response.

        Args:
            rng: The model's latency generator.

        Returns:
            Seconds.
        """
        if isinstance(self.latency_ms, tuple):
            low, high = self.latency_ms
            return rng.uniform(low, high) / 1000.0
        return self.latency_ms / 1000.0

    def pick_fault(
        self, call_number: int, rng: random.Random, *, streaming: bool
    ) -> Fault | None:
        """Choose the fault for a call: the first that fires.

        Args:
            call_number: The model's 1-based call count.
            rng: The model's fault generator.
            streaming: Whether the call streams; stream-only faults are
                skipped for other calls.

        Returns:
            The fault, or None for a normal answer.
        """
        for fault in self.faults:
            if not streaming and fault.kind in STREAM_ONLY_FAULTS:
                continue
            if fault.fires(call_number, rng):
                return fault
        return None

    def answer(self, system: str, last_user: str) -> str:
        r"""Choose the answer text for a prompt.

        Args:
            system: The system text of the request.
            last_user: The last user message.

        Returns:
            The simulation's answer when ``simulate`` is set; else the
            first matching rule's reply (with group references such as
            ``\g<1>`` expanded), else ``reply``, else the echo.
        """
        if self.simulate == "task":
            return simulation.task_answer(system, last_user)
        if self.simulate == "control":
            return simulation.control_answer(system, last_user)
        if self.simulate == "meta":
            meta_prompt = f"{system}\n\n{last_user}" if system else last_user
            return simulation.meta_answer(meta_prompt)
        haystack = f"{system}\n{last_user}" if system else last_user
        for rule in self.rules:
            match = rule.pattern.search(haystack)
            if match:
                return match.expand(rule.reply)
        return last_user if self.reply is None else self.reply


def _is_duration(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value >= 0
    )


def _latency(value: Any, where: str) -> float | tuple[float, float]:
    if value is None:
        return 0.0
    if isinstance(value, Mapping):
        low, high = value.get("min"), value.get("max")
        if set(value) != {"min", "max"} or not (
            _is_duration(low) and _is_duration(high)
        ):
            raise BehaviourError(f"{where}: needs {{min, max}}, both >= 0")
        if low > high:
            raise BehaviourError(f"{where}: min must not exceed max")
        return (float(low), float(high))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BehaviourError(f"{where}: a number or {{min, max}}")
    if value < 0:
        raise BehaviourError(f"{where}: must not be negative")
    return float(value)


def _batch(raw: Any, where: str) -> BatchBehaviour:
    try:
        return BatchBehaviour.parse(raw, where)
    except BatchBehaviourError as exc:
        raise BehaviourError(str(exc)) from exc


def _simulation(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value in SIMULATIONS):
        return value
    kinds = ", ".join(sorted(SIMULATIONS))
    raise BehaviourError(f"{where}: must be one of {kinds}")


def _optional_text(
    raw: Mapping[str, Any], key: str, where: str, *, allow_empty: bool = False
) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (not value and not allow_empty):
        raise BehaviourError(f"{where}.{key}: must be a string")
    return value


def _sequence(raw: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = raw.get(key) or ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise BehaviourError(f"{where}.{key}: must be a list")
    return value


def _rules(raw: Any, where: str) -> tuple[Rule, ...]:
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise BehaviourError(f"{where}: must be a list")
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"match", "reply"}:
            raise BehaviourError(f"{where}[{i}]: needs exactly match, reply")
        if not isinstance(item["reply"], str):
            raise BehaviourError(f"{where}[{i}].reply: must be a string")
        try:
            pattern = re.compile(str(item["match"]))
        except re.error as exc:
            raise BehaviourError(f"{where}[{i}].match: {exc}") from exc
        rules.append(Rule(pattern, item["reply"]))
    return tuple(rules)
