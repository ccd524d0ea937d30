"""The model catalog: which models clients may use, and their limits.

A model has a unique ``name`` (what clients send), a ``provider`` (a
registry name), the provider config, limits and pricing. Keys are never
stored: they come from ``{MODEL_NAME}_KEY`` in each worker's environment.
The catalog is seeded from ``configs/models.yaml``; admins manage it.
A model may name ``fallbacks``: other catalog models its items move to,
in order, while its provider is down (:mod:`pipeline.worker.fallback`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pymongo.errors import DuplicateKeyError

from pipeline.errors import Conflict, NotFound, ValidationFailed
from pipeline.logging import BusinessLogger, get_logger
from pipeline.settings import SECRET_VARIABLES, Settings
from pipeline.store import Store
from pipeline.store.document_collection import Document, new_metadata, utcnow
from providers.keys import KeyVariablePolicy, key_variable

log = get_logger(__name__)
business = BusinessLogger()

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"

#: Config fields that would hold a secret; keys live in the environment.
_SECRET_CONFIG = re.compile(r"(?i)^(api[-_]?key|key|secret|token|password)$")


#: The service's own secrets: never sent to a model, whatever the name.
RESERVED_KEY_VARIABLES = frozenset({*SECRET_VARIABLES, "DB_CONNECTION_STRING"})


def key_variable_policy(settings: Settings | None = None) -> KeyVariablePolicy:
    """Which variables may hold a model key under these settings."""
    return KeyVariablePolicy(
        allowed=settings.allowed_key_variables if settings else frozenset(),
        allow_list_setting="API_KEY_ENV_ALLOWLIST",
        reserved=RESERVED_KEY_VARIABLES,
    )


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )


#: The largest ``max_tokens`` a request may ask of a model whose
#: catalog entry gives no ``maxOutputTokens``.
DEFAULT_MAX_OUTPUT_TOKENS = 65_536


class Limits(_CamelModel):
    """Per-model limits, holding across the whole cluster."""

    max_concurrency: int | None = Field(None, ge=1, le=10_000)
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute")
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="largest max_tokens a request may ask "
        f"({DEFAULT_MAX_OUTPUT_TOKENS} when absent)",
    )


def max_tokens_problem(
    model: Mapping[str, Any], requested: int | None
) -> str | None:
    """Why a request's ``max_tokens`` is too large for a model, if it is.

    Args:
        model: The stored catalog model.
        requested: The request's ``max_tokens`` (None: the default).

    Returns:
        A message naming the limit, or None when the request fits.
    """
    limits = model.get("limits") or {}
    limit = limits.get("maxOutputTokens") or DEFAULT_MAX_OUTPUT_TOKENS
    if requested is None or requested <= limit:
        return None
    return (
        f"{requested} is over the limit of {limit} output tokens of model "
        f"{model['name']!r}"
    )


#: The most fallbacks a model may name.
MAX_FALLBACKS = 5


#: Batch prices as a share of live ones when the catalog gives none: the
#: vendors' batch APIs cost about half.
BATCH_DISCOUNT = 0.5


class Pricing(_CamelModel):
    """USD per one million tokens, live and through a batch API.

    A batch price left out (None) is :data:`BATCH_DISCOUNT` of the live
    one.
    """

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    batch_input_per_million: float | None = Field(None, ge=0)
    batch_output_per_million: float | None = Field(None, ge=0)

    @property
    def batch_input(self) -> float:
        """The batch price of a million input tokens."""
        if self.batch_input_per_million is not None:
            return self.batch_input_per_million
        return self.input_per_million * BATCH_DISCOUNT

    @property
    def batch_output(self) -> float:
        """The batch price of a million output tokens."""
        if self.batch_output_per_million is not None:
            return self.batch_output_per_million
        return self.output_per_million * BATCH_DISCOUNT

    def cost(
        self, input_tokens: int, output_tokens: int, *, batch: bool = False
    ) -> float:
        """The price of a call with this usage, in USD.

        Args:
            input_tokens: Tokens in.
            output_tokens: Tokens out.
            batch: Whether the call went through a provider batch.

        Returns:
            USD.
        """
        if batch:
            per_input, per_output = self.batch_input, self.batch_output
        else:
            per_input = self.input_per_million
            per_output = self.output_per_million
        return (input_tokens * per_input + output_tokens * per_output) / (
            1_000_000
        )


class ModelSpec(_CamelModel):
    """A catalog entry as admins write it."""

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    provider: str = Field(min_length=1)
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    pricing: Pricing = Field(default_factory=Pricing)
    active: bool = True
    simulated: bool = False
    shared_cache: bool = Field(
        False,
        description="clients share the model's result cache (a cached "
        "answer may then be another client's); per client when false",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        max_length=MAX_FALLBACKS,
        description="other catalog models, in order, that take an item "
        "over while this model's provider is down or out of capacity",
    )


def validate_spec(
    spec: ModelSpec, key_policy: KeyVariablePolicy | None = None
) -> None:
    """Check the provider exists and accepts the config.

    Args:
        spec: The model.
        key_policy: Which variables may hold its key (the default
            policy when None).

    Raises:
        ValidationFailed: Naming ``provider``, ``config.<field>`` or
            ``name`` (a name whose key variable is not allowed).
    """
    from providers.errors import (
        ConfigError,
        MissingDependencyError,
        UnknownProviderError,
    )
    from providers.registry import get_provider

    fallbacks_problem(spec)
    for key in spec.config:
        if _SECRET_CONFIG.match(key):
            raise ValidationFailed.single(
                f"config.{key}",
                "keys are never stored; set the model's key variable "
                "in the workers' environment instead",
            )
    try:
        provider = get_provider(spec.provider)
    except (UnknownProviderError, MissingDependencyError) as error:
        raise ValidationFailed.single("provider", str(error)) from None
    try:
        provider.validate_config(spec.config)
    except ConfigError as error:
        field = f"config.{error.field}" if error.field else "config"
        raise ValidationFailed.single(field, error.message) from None
    try:
        key_variable(
            spec.name, spec.config, key_policy or key_variable_policy()
        )
    except ConfigError as error:
        field = f"config.{error.field}" if error.field else "name"
        raise ValidationFailed.single(field, error.message) from None


def fallbacks_problem(spec: ModelSpec) -> None:
    """Refuse a model that falls back on itself or names one twice.

    Raises:
        ValidationFailed: Naming ``fallbacks``.
    """
    if spec.name in spec.fallbacks:
        raise ValidationFailed.single(
            "fallbacks", f"a model cannot fall back on itself ({spec.name!r})"
        )
    if len(set(spec.fallbacks)) != len(spec.fallbacks):
        raise ValidationFailed.single(
            "fallbacks", "names a model more than once"
        )


def check_fallbacks_exist(spec: ModelSpec, known: set[str]) -> None:
    """Refuse fallbacks that name no catalog model.

    Args:
        spec: The model.
        known: Names of the models it may fall back on.

    Raises:
        ValidationFailed: Naming ``fallbacks`` and the unknown models.
    """
    unknown = sorted(set(spec.fallbacks) - known)
    if unknown:
        raise ValidationFailed.single(
            "fallbacks", "unknown models: " + ", ".join(unknown)
        )


def load_seed(path: str | Path) -> list[ModelSpec]:
    """Read the catalog seed file.

    Raises:
        ValueError: The file is malformed (names the entry).
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    specs = []
    for index, entry in enumerate(raw.get("models") or []):
        try:
            specs.append(ModelSpec.model_validate(entry))
        except ValidationError as error:
            raise ValueError(f"{path}: models[{index}]: {error}") from None
    return specs


class ModelCatalog:
    """Read and manage the ``models`` collection."""

    def __init__(
        self, store: Store, key_policy: KeyVariablePolicy | None = None
    ) -> None:
        self._docs = store.documents("models")
        self._key_policy = key_policy or key_variable_policy()

    async def seed(self, specs: list[ModelSpec]) -> int:
        """Insert seed models whose names are not in the catalog yet.

        Admins' changes are never overwritten, and a model an admin
        deleted stays deleted.

        Returns:
            How many models were added.
        """
        added = 0
        known = {s.name for s in specs} | await self._live_names()
        for spec in specs:
            validate_spec(spec, self._key_policy)
            check_fallbacks_exist(spec, known)
            document = {
                **spec.model_dump(by_alias=True),
                "_metadata": new_metadata("seed"),
            }
            try:
                await self._docs.collection.insert_one(document)
                added += 1
            except DuplicateKeyError:
                continue
        if added:
            log.info("catalog_seeded", added=added)
        return added

    async def _live_names(self) -> set[str]:
        """Names of the models not deleted."""
        return {doc["name"] for doc in await self.list(active_only=False)}

    async def _check_fallbacks(self, spec: ModelSpec) -> None:
        if spec.fallbacks:
            found = await self.by_names(set(spec.fallbacks))
            check_fallbacks_exist(spec, set(found))

    async def list(self, *, active_only: bool) -> list[Document]:
        """Live models, by name."""
        query = {"active": True} if active_only else {}
        return await self._docs.read(query, sort=[("name", 1)])

    async def get(self, name: str, *, active_only: bool = False) -> Document:
        """A live model by name.

        Raises:
            NotFound: No such (active) model.
        """
        query: dict[str, Any] = {"name": name}
        if active_only:
            query["active"] = True
        document = await self._docs.find_one(query)
        if document is None:
            raise NotFound("model", name)
        return document

    async def by_names(self, names: set[str]) -> dict[str, Document]:
        """Live, active models among ``names``, keyed by name."""
        documents = await self._docs.read(
            {"name": {"$in": sorted(names)}, "active": True}
        )
        return {d["name"]: d for d in documents}

    async def create(self, spec: ModelSpec, *, actor: str) -> Document:
        """Add a model; a deleted model of the same name is revived.

        Raises:
            ValidationFailed: Unknown provider or invalid config.
            Conflict: A live model has that name.
        """
        validate_spec(spec, self._key_policy)
        await self._check_fallbacks(spec)
        fields = spec.model_dump(by_alias=True)
        existing = await self._docs.collection.find_one({"name": spec.name})
        if existing is None:
            try:
                return await self._docs.create(fields, actor=actor)
            except DuplicateKeyError:
                pass
        elif existing["_metadata"]["isDeleted"]:
            now = utcnow()
            metadata = {**new_metadata(actor, now)}
            await self._docs.collection.replace_one(
                {"_id": existing["_id"]},
                {**fields, "_id": existing["_id"], "_metadata": metadata},
            )
            business.log_operation("models", "create", model=spec.name)
            return await self.get(spec.name)
        raise Conflict(f"model {spec.name!r} already exists")

    async def replace(
        self, name: str, spec: ModelSpec, *, actor: str
    ) -> Document:
        """Replace a model's definition (its name stays).

        Raises:
            ValidationFailed: The body renames the model or is invalid.
            NotFound: No such model.
        """
        if spec.name != name:
            raise ValidationFailed.single(
                "name", f"must be {name!r} (models cannot be renamed)"
            )
        validate_spec(spec, self._key_policy)
        await self._check_fallbacks(spec)
        fields = spec.model_dump(by_alias=True)
        fields.pop("name")
        document = await self._docs.update({"name": name}, fields, actor=actor)
        if document is None:
            raise NotFound("model", name)
        business.log_operation("models", "replace", model=name)
        return document

    async def delete(self, name: str, *, actor: str) -> None:
        """Deactivate and soft-delete a model.

        Raises:
            NotFound: No such model.
        """
        updated = await self._docs.update(
            {"name": name}, {"active": False}, actor=actor
        )
        if updated is None:
            raise NotFound("model", name)
        await self._docs.soft_delete({"name": name}, actor=actor)
        business.log_operation("models", "delete", model=name)


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A provider config as clients may see it (endpoints stay private)."""
    return {
        k: v
        for k, v in config.items()
        if k in ("modelId", "deployment", "apiVersion")
    }
