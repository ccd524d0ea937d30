"""The fake server's configuration: a seed, a default and per-model behaviours.

One document, the same in a config file (YAML or JSON), in
``FakeProviderServer.configure(...)`` and in ``POST /_fake/config``::

    seed: 7
    default: {latencyMs: 200, streamTokensPerSecond: 100}
    models:
      gpt-sim: {faults: [{kind: rate_limit, rate: 0.05, retryAfter: 1}]}

A model is keyed by the upstream model id the request names (the body's
``model``, the Azure deployment in the path, the Gemini model in the
path); unknown models behave as ``default``. A model's behaviour is the
default with the model's fields laid over it. An update replaces the
models it names (and the default or seed when given) and keeps the rest;
``replace: true`` starts from an empty configuration instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .behaviour import Behaviour, BehaviourError

_DOCUMENT_FIELDS = frozenset({"seed", "default", "models", "replace"})


class FakeConfig:
    """Behaviours by model, validated when set.

    Args:
        document: An initial configuration document, if any.

    Raises:
        BehaviourError: The document is invalid.
    """

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        self.seed = 0
        self._default: dict[str, Any] = {}
        self._models: dict[str, dict[str, Any]] = {}
        self._parsed: dict[str | None, Behaviour] = {None: Behaviour()}
        if document:
            self.update(document)

    def update(self, document: Mapping[str, Any]) -> None:
        """Apply a configuration document (see the module docstring).

        Args:
            document: The document.

        Raises:
            BehaviourError: Naming the bad field; nothing is changed then.
        """
        if not isinstance(document, Mapping):
            raise BehaviourError("config: must be a mapping")
        for key in document:
            if key not in _DOCUMENT_FIELDS:
                raise BehaviourError(
                    f"config.{key}: unknown field; expected one of "
                    + ", ".join(sorted(_DOCUMENT_FIELDS))
                )
        replace = bool(document.get("replace"))
        seed = document.get("seed", 0 if replace else self.seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BehaviourError("config.seed: must be an integer")
        default = dict(
            document.get("default") or ({} if replace else self._default)
        )
        models = {} if replace else dict(self._models)
        for name, raw in (document.get("models") or {}).items():
            if not isinstance(raw, Mapping):
                raise BehaviourError(
                    f"config.models.{name}: must be a mapping"
                )
            models[str(name)] = dict(raw)
        # Parse everything before changing anything: a bad update is atomic.
        parsed: dict[str | None, Behaviour] = {
            None: Behaviour.parse(default, "config.default")
        }
        for name, raw in models.items():
            parsed[name] = Behaviour.parse(
                {**default, **raw}, f"config.models.{name}"
            )
        self.seed, self._default, self._models = seed, default, models
        self._parsed = parsed

    def behaviour(self, model: str) -> Behaviour:
        """Return a model's behaviour (the default for unknown models).

        Args:
            model: The upstream model id.

        Returns:
            The behaviour.
        """
        return self._parsed.get(model) or self._parsed[None]

    def to_document(self) -> dict[str, Any]:
        """Return the configuration as a document (for ``GET``/echo)."""
        return {
            "seed": self.seed,
            "default": self._default,
            "models": self._models,
        }


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a configuration document from a YAML or JSON file.

    Args:
        path: The file; ``.json`` is read as JSON, anything else as YAML.

    Returns:
        The document.

    Raises:
        BehaviourError: The file is not a mapping.
        OSError: The file cannot be read.
    """
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        document = json.loads(text)
    else:
        import yaml

        document = yaml.safe_load(text) or {}
    if not isinstance(document, Mapping):
        raise BehaviourError(f"{path}: the config must be a mapping")
    return dict(document)
