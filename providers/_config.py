"""Model config reading: typed values out of a camelCase mapping.

A model's provider config is stored as a plain mapping (camelCase keys, as
in the models collection). :class:`ConfigReader` turns it into typed values
field by field and raises :class:`~providers.errors.ConfigError` naming the
first offending field, so an admin sees ``baseUrl: not a URL`` rather than
an SDK stack trace. Unknown fields are rejected too: a typo such as
``baseURL`` must not silently send traffic to the vendor's default URL.

The fields every provider shares live here as well: ``timeoutSeconds``,
``auth`` and ``apiKeyEnv``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import ConfigError

AuthMode = Literal["key", "none"]

DEFAULT_TIMEOUT_SECONDS = 120.0
COMMON_FIELDS = frozenset({"timeoutSeconds", "auth", "apiKeyEnv"})
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """The config fields every provider understands.

    Attributes:
        timeout_seconds: The most one call may take, first byte to last.
        auth: ``key`` (an API key is required) or ``none`` (local servers).
        api_key_env: Variable holding the key, overriding the
            ``{MODEL_NAME}_KEY`` convention; None to use the convention.
    """

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    auth: AuthMode = "key"
    api_key_env: str | None = None


class ConfigReader:
    """Reads typed fields out of one model config, naming bad fields.

    Args:
        config: The model's provider config.
        provider: Registry name of the provider, for error messages.
        fields: The provider-specific fields it accepts (the common fields
            are always accepted), or None to skip the unknown-field check
            (for readers of the common fields only).

    Raises:
        ConfigError: The config is not a mapping or has an unknown field.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        provider: str,
        fields: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"{provider}: the model config must be a mapping, "
                f"got {type(config).__name__}",
                provider=provider,
            )
        self._config = config
        self._provider = provider
        if fields is None:
            return
        allowed = COMMON_FIELDS | set(fields)
        for key in config:
            if key not in allowed:
                raise self.error(
                    str(key),
                    "unknown field; expected one of "
                    + ", ".join(sorted(allowed)),
                )

    def error(self, field: str, problem: str) -> ConfigError:
        """Build the error for one bad field.

        Args:
            field: The camelCase field name.
            problem: What is wrong with it.

        Returns:
            The error, ready to raise.
        """
        return ConfigError(
            f"{self._provider} config field {field!r}: {problem}",
            provider=self._provider,
            field=field,
        )

    def has(self, field: str) -> bool:
        """Tell whether a field is present and not null."""
        return self._config.get(field) is not None

    def text(self, field: str) -> str | None:
        """Read an optional non-empty string.

        Args:
            field: The field name.

        Returns:
            The string (stripped), or None when absent.

        Raises:
            ConfigError: Not a string, or empty.
        """
        value = self._config.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, "must be a non-empty string")
        return value.strip()

    def required_text(self, field: str) -> str:
        """Read a non-empty string that must be present.

        Args:
            field: The field name.

        Returns:
            The string (stripped).

        Raises:
            ConfigError: Missing, not a string, or empty.
        """
        value = self.text(field)
        if value is None:
            raise self.error(field, "is required")
        return value

    def url(self, field: str) -> str | None:
        """Read an optional absolute http(s) URL.

        Args:
            field: The field name.

        Returns:
            The URL without a trailing slash, or None when absent.

        Raises:
            ConfigError: Not an http(s) URL.
        """
        value = self.text(field)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.error(field, f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    def required_url(self, field: str) -> str:
        """Read an absolute http(s) URL that must be present.

        Args:
            field: The field name.

        Returns:
            The URL without a trailing slash.

        Raises:
            ConfigError: Missing, or not an http(s) URL.
        """
        value = self.url(field)
        if value is None:
            raise self.error(field, "is required")
        return value

    def positive_number(self, field: str, default: float) -> float:
        """Read a number greater than zero.

        Args:
            field: The field name.
            default: The value when the field is absent.

        Returns:
            The number as a float.

        Raises:
            ConfigError: Not a number, or not greater than zero.
        """
        value = self._config.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(field, "must be a number")
        if value <= 0:
            raise self.error(field, "must be greater than zero")
        return float(value)

    def positive_int(self, field: str, default: int) -> int:
        """Read an integer greater than zero.

        Args:
            field: The field name.
            default: The value when the field is absent.

        Returns:
            The integer.

        Raises:
            ConfigError: Not an integer, or not greater than zero.
        """
        value = self._config.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, "must be an integer")
        if value <= 0:
            raise self.error(field, "must be greater than zero")
        return value

    def choice(self, field: str, choices: Iterable[str], default: str) -> str:
        """Read one of a fixed set of strings.

        Args:
            field: The field name.
            choices: The allowed values.
            default: The value when the field is absent.

        Returns:
            The chosen value.

        Raises:
            ConfigError: A value outside ``choices``.
        """
        allowed = tuple(choices)
        value = self._config.get(field)
        if value is None:
            return default
        if value not in allowed:
            raise self.error(
                field, f"must be one of {', '.join(allowed)}; got {value!r}"
            )
        return str(value)

    def common(self) -> CommonSettings:
        """Read the fields every provider shares.

        Returns:
            The common settings.

        Raises:
            ConfigError: Naming a bad ``timeoutSeconds``, ``auth`` or
                ``apiKeyEnv``.
        """
        auth = self.choice("auth", ("key", "none"), "key")
        api_key_env = self.text("apiKeyEnv")
        if api_key_env is not None and not _ENV_VAR_NAME.fullmatch(
            api_key_env
        ):
            raise self.error("apiKeyEnv", "not an environment variable name")
        return CommonSettings(
            timeout_seconds=self.positive_number(
                "timeoutSeconds", DEFAULT_TIMEOUT_SECONDS
            ),
            auth="none" if auth == "none" else "key",
            api_key_env=api_key_env,
        )
