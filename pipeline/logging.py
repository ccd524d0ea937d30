"""Structured logging: JSON lines through structlog, with secrets redacted.

Every line carries the context bound for the current request, job or
item (``request_id``, ``job_id``, ``item_id``) through structlog's
contextvars. A redaction step runs last before rendering, so no admin
key, client key, pepper, provider key, connection string or
``Authorization`` value can reach a log line, whoever logged it.

Only secrets the process knows are redacted as values: its secret
environment variables, and keys that authenticated (a bounded set). A
key a caller merely presents is not: a failed attempt must not make
words of the caller's choosing vanish from the logs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import urlsplit

import structlog

REDACTED = "[REDACTED]"

#: Field names whose values are always secret (compared case-insensitive,
#: with ``-`` and ``_`` ignored).
_SECRET_FIELDS = frozenset(
    {
        "apikey",
        "xadminkey",
        "xclientkey",
        "clientkey",
        "adminkey",
        "authorization",
        "pepper",
        "apikeypepper",
        "secret",
        "docssecret",
        "password",
        "keyhash",
        "proxyauthorization",
        "cookie",
        "dbconnectionstring",
        "connectionstring",
    }
)

#: Client keys carry their own prefix, so they are found in free text.
CLIENT_KEY_PATTERN = re.compile(r"msk_[A-Za-z0-9]+_[A-Za-z0-9_\-]{16,}")
_BEARER_PATTERN = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")

#: Environment variables whose values are secrets by convention.
_SECRET_ENV = re.compile(r"(_KEY|_SECRET|_PEPPER|_TOKEN|PASSWORD)$")
#: Variables holding a URI whose password is a secret.
_SECRET_URI_ENV = frozenset({"DB_CONNECTION_STRING"})

#: Authenticated keys remembered for redaction; the oldest go first (a
#: client key is also caught by its shape, whether remembered or not).
MAX_REMEMBERED_KEYS = 256


class SecretRedactor:
    """A structlog processor that removes secrets from an event dict.

    It masks fields with secret names, anything shaped like a client key
    or an ``Authorization`` value, and every known secret value: the
    process's own (read from the environment at start, or added with
    :meth:`register`) and the last :data:`MAX_REMEMBERED_KEYS` keys that
    authenticated (:meth:`remember_authenticated`).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        # Longest first: a secret that contains another (a URI and its
        # password) goes whole.
        self._longest_first: tuple[str, ...] = ()
        self._authenticated: OrderedDict[str, None] = OrderedDict()
        for value in values:
            self.register(value)

    def register(self, value: str | None) -> None:
        """Treat a secret of the process as one from now on.

        Only for values the process itself holds (its settings and
        environment): never for what a caller presents. Short values
        are ignored (they would mask ordinary words).
        """
        if value and len(value) >= 8 and value not in self._values:
            self._values.add(value)
            self._longest_first = tuple(
                sorted(self._values, key=len, reverse=True)
            )

    def remember_authenticated(self, key: str) -> None:
        """Redact a key that authenticated (bounded: the oldest go)."""
        if len(key) < 8 or key in self._values:
            return
        self._authenticated[key] = None
        self._authenticated.move_to_end(key)
        while len(self._authenticated) > MAX_REMEMBERED_KEYS:
            self._authenticated.popitem(last=False)

    @property
    def remembered(self) -> int:
        """How many authenticated keys are remembered now."""
        return len(self._authenticated)

    def register_environment(self, environ: dict[str, str]) -> None:
        """Register the values of secret-looking environment variables."""
        for name, value in environ.items():
            upper = name.upper()
            if _SECRET_ENV.search(upper):
                self.register(value)
            elif upper in _SECRET_URI_ENV:
                self.register(value)
                self.register(_uri_password(value))

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Redact ``event`` in place (the structlog processor protocol)."""
        for key in list(event):
            event[key] = self._clean(key, event[key])
        return event

    def _clean(self, key: str, value: Any) -> Any:
        if _is_secret_field(key):
            return REDACTED if value not in (None, "") else value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._clean("", v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def scrub(self, text: str) -> str:
        """Return ``text`` with every secret in it replaced."""
        for secret in (*self._longest_first, *self._authenticated):
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = CLIENT_KEY_PATTERN.sub(REDACTED, text)
        return _BEARER_PATTERN.sub(lambda m: f"{m[1]} {REDACTED}", text)


def _uri_password(uri: str) -> str | None:
    """The password in a URI's user info, if any."""
    try:
        return urlsplit(uri).password
    except ValueError:
        return None


def _is_secret_field(key: str) -> bool:
    normalized = key.lower().replace("-", "").replace("_", "")
    return normalized in _SECRET_FIELDS or normalized.endswith("apikey")


#: The process's redactor; shared by structlog and the stdlib bridge.
redactor = SecretRedactor()


def configure_logging(
    level: str = "INFO",
    *,
    stream: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    """Set up structlog (JSON lines) and route stdlib logging through it.

    Args:
        level: Minimum level name.
        stream: Where lines go; standard error by default.
        environ: Environment whose secret-looking values are redacted;
            ``os.environ`` by default.
    """
    redactor.register_environment(
        dict(os.environ if environ is None else environ)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[
            *shared[:-2],
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.format_exc_info,
            redactor,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(default=str),
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_metasync", False):
            root.removeHandler(old)
    handler._metasync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The SDKs' HTTP clients log request lines at INFO; keep them quiet.
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named after its module."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


class BusinessLogger:
    """The seed's logger for business operations (who did what)."""

    def __init__(self, name: str = "metasync.business") -> None:
        self._log = get_logger(name)

    def log_operation(
        self, service: str, operation: str, **fields: Any
    ) -> None:
        """Record a completed business operation.

        Args:
            service: The service that acted (``jobs``, ``clients``, ...).
            operation: What it did (``create``, ``cancel``, ...).
            **fields: Ids and figures describing it (never secrets).
        """
        self._log.info(
            "business_operation",
            service=service,
            operation=operation,
            **fields,
        )

    def log_error(
        self, service: str, operation: str, error: str, **fields: Any
    ) -> None:
        """Record a failed business operation.

        Args:
            service: The service that acted.
            operation: What it tried.
            error: What went wrong.
            **fields: Ids describing it.
        """
        self._log.error(
            "business_operation_failed",
            service=service,
            operation=operation,
            error=error,
            **fields,
        )


bind_context = structlog.contextvars.bind_contextvars
clear_context = structlog.contextvars.clear_contextvars
bound_context = structlog.contextvars.bound_contextvars
