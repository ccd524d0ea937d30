"""API keys: which environment variable holds a model's key, and reading it.

Keys never live in the database. By the seed's convention the key of model
``gpt-4`` is in ``GPT_4_KEY`` (upper case, every non-alphanumeric character
becomes ``_``); a model config may name another variable in ``apiKeyEnv``,
and local servers (the fake provider, vLLM, Ollama) set ``auth: none`` to
need no key at all. Errors name the variable, never its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ._config import ConfigReader
from .errors import AuthenticationError

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def key_env_var(model_name: str) -> str:
    """Name the environment variable that holds a model's key by convention.

    Args:
        model_name: The catalog name of the model, e.g. ``gpt-4``.

    Returns:
        The variable name, e.g. ``GPT_4_KEY``.
    """
    return _NON_ALNUM.sub("_", model_name).upper() + "_KEY"


def resolve_api_key(
    model_name: str,
    config: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """Read a model's API key from the environment.

    Args:
        model_name: The catalog name of the model.
        config: The model's provider config (``auth`` and ``apiKeyEnv``
            are read).
        environ: Where to look; the process environment by default.

    Returns:
        The key, or None when the config says ``auth: none``.

    Raises:
        AuthenticationError: A key is needed and the variable is unset or
            empty; the message names the variable.
        ConfigError: ``auth`` or ``apiKeyEnv`` is invalid.
    """
    common = ConfigReader(config, "model").common()
    if common.auth == "none":
        return None
    variable = common.api_key_env or key_env_var(model_name)
    key = environ.get(variable, "").strip()
    if not key:
        raise AuthenticationError(
            f"no API key for model {model_name!r}: set the environment "
            f"variable {variable}",
            model=model_name,
        )
    return key
