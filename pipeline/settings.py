"""Settings: the one typed configuration object, read from the environment.

Every process (Serve replica, worker actor, CLI) builds its own
:class:`Settings` from its own environment; secrets are never passed
between processes as arguments. A development start needs no variables:
missing secrets are generated once and kept in a local file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

Environment = Literal["development", "production", "test"]

#: Secrets that production must be given and development may generate.
SECRET_VARIABLES = ("ADMIN_API_KEY", "API_KEY_PEPPER", "DOCS_SECRET")

_UNSET = SecretStr("")

#: The checkout (or install) root: configs/ lives here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where development state (generated secrets, the embedded database)
#: lives, relative to the working directory unless METASYNC_HOME is set.
DEFAULT_STATE_DIR = ".metasync"

#: Bytes at the end of an item id that hold the item's seq (the layout is
#: :mod:`pipeline.jobs.item_ids`). They bound ``MAX_ITEMS_PER_JOB``, which
#: every process checks when it reads its settings, so the width lives
#: here, below the jobs package.
ITEM_SEQ_BYTES = 3
#: The most items a job's ids can number: the largest MAX_ITEMS_PER_JOB.
ITEM_ID_CAPACITY = 1 << (8 * ITEM_SEQ_BYTES)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, with the seed's defaults.

    Attributes mirror environment variables of the same name in upper
    case (``poll_interval`` <- ``POLL_INTERVAL``), except where noted.
    """

    environment: Environment = "development"  # METASYNC_ENV
    #: Out of the repr: the URI may hold the database password.
    db_connection_string: str | None = field(default=None, repr=False)
    db_name: str = "metasync-dev"
    docs_user: str = "user"
    docs_secret: SecretStr = _UNSET
    api_key_pepper: SecretStr = _UNSET
    admin_api_key: SecretStr = _UNSET
    #: Seconds between a worker's safety-net polls of the database.
    poll_interval: float = 10.0
    #: Items a worker claims per round.
    max_items_per_batch: int = 50
    #: In-flight calls per model when the catalog gives no maxConcurrency.
    num_llm_workers: int = 10
    #: Largest number of items one job may hold.
    max_items_per_job: int = 100_000
    #: Largest accepted request body, in bytes.
    max_request_bytes: int = 64 * 2**20
    #: Seconds a claimed item stays leased to its worker.
    lease_seconds: float = 300.0
    #: Seconds a result cache entry lives (the server's TTL index).
    cache_ttl_seconds: int = 7 * 24 * 3600
    #: Worker actors per provider (each serves all the provider's models).
    worker_replicas: int = 1
    #: Ray namespace holding the named worker and limiter actors.
    ray_namespace: str = "metasync"
    #: Path of the model catalog seed (the repository's by default).
    models_file: str = str(PROJECT_ROOT / "configs" / "models.yaml")
    log_level: str = "INFO"
    #: Comma-separated variables that may hold a model key although
    #: their names do not end in ``_KEY`` (``apiKeyEnv``).
    api_key_env_allowlist: str = ""
    state_dir: str = DEFAULT_STATE_DIR  # METASYNC_HOME
    generated_secrets: tuple[str, ...] = field(default=())

    @property
    def is_production(self) -> bool:
        """Whether this is a production deployment."""
        return self.environment == "production"

    @property
    def allowed_key_variables(self) -> frozenset[str]:
        """The names in ``API_KEY_ENV_ALLOWLIST``."""
        return frozenset(
            name.strip()
            for name in self.api_key_env_allowlist.split(",")
            if name.strip()
        )

    def secret_values(self) -> list[str]:
        """The secrets these settings hold, for the log redactor."""
        values = [
            getattr(self, name.lower()).get_secret_value()
            for name in SECRET_VARIABLES
        ]
        if self.db_connection_string:
            values.append(self.db_connection_string)
        return [value for value in values if value]

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced (tests, launcher)."""
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        generate_dev_secrets: bool = True,
    ) -> Settings:
        """Read and validate the settings.

        Args:
            environ: The environment; ``os.environ`` by default.
            generate_dev_secrets: Outside production, create missing
                secrets and keep them in ``<state_dir>/dev-secrets.json``.

        Returns:
            The settings.

        Raises:
            SettingsError: Naming the first missing or invalid variable.
        """
        env = dict(os.environ if environ is None else environ)
        environment = env.get("METASYNC_ENV", "development").strip().lower()
        if environment not in ("development", "production", "test"):
            raise SettingsError(
                "METASYNC_ENV",
                f"must be development, production or test, not "
                f"{environment!r}",
            )
        values: dict[str, Any] = {
            "environment": environment,
            "state_dir": env.get("METASYNC_HOME", DEFAULT_STATE_DIR),
        }
        for f in fields(cls):
            name = f.name.upper()
            if f.name in ("environment", "state_dir", "generated_secrets"):
                continue
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(name, raw.strip(), f.default)
        generated: list[str] = []
        for name in SECRET_VARIABLES:
            if f"{name.lower()}" in values:
                continue
            if environment == "production" or not generate_dev_secrets:
                raise SettingsError(name, "is required in production")
            values[name.lower()] = SecretStr(
                _dev_secret(Path(values["state_dir"]), name, generated)
            )
        if environment == "production" and "db_connection_string" not in (
            values
        ):
            raise SettingsError(
                "DB_CONNECTION_STRING", "is required in production"
            )
        settings = cls(**values, generated_secrets=tuple(generated))
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges and relations between fields.

        Raises:
            SettingsError: Naming the offending variable.
        """
        positive = {
            "POLL_INTERVAL": self.poll_interval,
            "MAX_ITEMS_PER_BATCH": self.max_items_per_batch,
            "NUM_LLM_WORKERS": self.num_llm_workers,
            "MAX_ITEMS_PER_JOB": self.max_items_per_job,
            "MAX_REQUEST_BYTES": self.max_request_bytes,
            "LEASE_SECONDS": self.lease_seconds,
            "WORKER_REPLICAS": self.worker_replicas,
            "CACHE_TTL_SECONDS": self.cache_ttl_seconds,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(name, f"must be positive, not {value}")
        if self.max_items_per_batch > 1000:
            raise SettingsError("MAX_ITEMS_PER_BATCH", "must be at most 1000")
        if self.max_items_per_job > ITEM_ID_CAPACITY:
            raise SettingsError(
                "MAX_ITEMS_PER_JOB", f"must be at most {ITEM_ID_CAPACITY}"
            )
        if self.is_production:
            for name in SECRET_VARIABLES:
                secret = getattr(self, name.lower()).get_secret_value()
                if len(secret) < 16:
                    raise SettingsError(
                        name, "must be at least 16 characters in production"
                    )


def _parse(name: str, raw: str, default: Any) -> Any:
    """Convert one raw variable to the type of its default."""
    if isinstance(default, SecretStr):
        return SecretStr(raw)
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = type(default).__name__
        raise SettingsError(
            name, f"must be a number ({kind}), not {raw!r}"
        ) from None
    return raw


def _dev_secret(state_dir: Path, name: str, generated: list[str]) -> str:
    """Return the development value of a secret, creating it once."""
    path = state_dir / "dev-secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    if name not in stored:
        stored[name] = secrets.token_urlsafe(32)
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # Created private: the file holds the development admin key.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=2)
        tmp.replace(path)
        generated.append(name)
    return stored[name]
