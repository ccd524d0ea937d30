"""API keys: which environment variable holds a model's key, and reading it.

Keys never live in the database. By the seed's convention the key of model
``gpt-4`` is in ``GPT_4_KEY`` (upper case, every non-alphanumeric character
becomes ``_``); a model config may name another variable in ``apiKeyEnv``,
and local servers (the fake provider, vLLM, Ollama) set ``auth: none`` to
need no key at all. Errors name the variable, never its value.

The key is sent to the model's endpoint, which an admin chooses: so only
variables named as keys (``..._KEY``, or on an explicit allow-list) may
hold one, and never one of the service's own secrets
(:class:`KeyVariablePolicy`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._config import ConfigReader
from .errors import AuthenticationError, ConfigError

#: The suffix every key variable has, unless an allow-list names it.
KEY_SUFFIX = "_KEY"


@dataclass(frozen=True)
class KeyVariablePolicy:
    """Which environment variables may hold a model's key.

    Attributes:
        allowed: Names admitted although they do not end in ``_KEY``.
        allow_list_setting: The setting that fills ``allowed`` (named in
            messages), if any.
        reserved: Names never admitted (the service's own secrets).
    """

    allowed: frozenset[str] = frozenset()
    allow_list_setting: str | None = None
    reserved: frozenset[str] = frozenset()

    def problem(self, variable: str) -> str | None:
        """Why ``variable`` may not hold a model key, or None if it may."""
        if variable in self.reserved:
            return (
                f"{variable} holds a secret of the service itself and is "
                "never sent to a model"
            )
        if variable.endswith(KEY_SUFFIX) or variable in self.allowed:
            return None
        where = (
            f" (or be listed in {self.allow_list_setting})"
            if self.allow_list_setting
            else ""
        )
        return (
            f"{variable} may not hold a model key: the variable's name must "
            f"end in {KEY_SUFFIX}{where}"
        )


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def key_env_var(model_name: str) -> str:
    """Name the environment variable that holds a model's key by convention.

    Args:
        model_name: The catalog name of the model, e.g. ``gpt-4``.

    Returns:
        The variable name, e.g. ``GPT_4_KEY``.
    """
    return _NON_ALNUM.sub("_", model_name).upper() + "_KEY"


def key_variable(
    model_name: str,
    config: Mapping[str, Any],
    policy: KeyVariablePolicy = KeyVariablePolicy(),
) -> str | None:
    """The variable holding a model's key, checked against ``policy``.

    Args:
        model_name: The catalog name of the model.
        config: The model's provider config (``auth`` and ``apiKeyEnv``
            are read).
        policy: Which variables may hold a key.

    Returns:
        The variable's name, or None when the config says ``auth: none``.

    Raises:
        ConfigError: ``auth`` or ``apiKeyEnv`` is invalid, or the
            variable may not hold a key (``field`` is ``apiKeyEnv``, or
            None when the model's name gives the variable).
    """
    common = ConfigReader(config, "model").common()
    if common.auth == "none":
        return None
    variable = common.api_key_env or key_env_var(model_name)
    problem = policy.problem(variable)
    if problem is not None:
        field = "apiKeyEnv" if common.api_key_env else None
        raise ConfigError(problem, field=field, model=model_name)
    return variable


def resolve_api_key(
    model_name: str,
    config: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
    policy: KeyVariablePolicy = KeyVariablePolicy(),
) -> str | None:
    """Read a model's API key from the environment.

    Args:
        model_name: The catalog name of the model.
        config: The model's provider config (``auth`` and ``apiKeyEnv``
            are read).
        environ: Where to look; the process environment by default.
        policy: Which variables may hold a key.

    Returns:
        The key, or None when the config says ``auth: none``.

    Raises:
        AuthenticationError: A key is needed and the variable is unset or
            empty; the message names the variable.
        ConfigError: ``auth`` or ``apiKeyEnv`` is invalid, or the
            variable may not hold a key.
    """
    variable = key_variable(model_name, config, policy)
    if variable is None:
        return None
    key = environ.get(variable, "").strip()
    if not key:
        raise AuthenticationError(
            f"no API key for model {model_name!r}: set the environment "
            f"variable {variable}",
            model=model_name,
        )
    return key
