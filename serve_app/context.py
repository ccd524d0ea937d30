"""The app's collaborators, built once per replica from its settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalog import ModelCatalog, ModelSpec, load_seed
from pipeline.clients import ClientService
from pipeline.logging import get_logger
from pipeline.prompts import PromptService
from pipeline.quotas import RequestRateGate
from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client

log = get_logger(__name__)


@dataclass
class AppContext:
    """Everything a request handler may need."""

    settings: Settings
    store: Store
    clients: ClientService
    catalog: ModelCatalog
    prompts: PromptService
    rate_gate: RequestRateGate
    #: Named checks for ``/ready``, each answering "ok" or a problem.
    readiness_checks: dict[str, Callable[[], Awaitable[str]]] = field(
        default_factory=dict
    )

    @classmethod
    async def open(cls, settings: Settings) -> AppContext:
        """Connect, create indexes and seed the catalog.

        Raises:
            DatabaseUnavailable: The database cannot be reached.
        """
        if not settings.db_connection_string:
            raise RuntimeError(
                "DB_CONNECTION_STRING is not set: start the service with "
                "`metasync up`, which provides a local database"
            )
        store = Store(
            create_mongo_client(
                settings.db_connection_string, app_name="metasync-api"
            ),
            settings.db_name,
        )
        await store.ensure_indexes()
        catalog = ModelCatalog(store)
        await catalog.seed(_seed_specs(settings.models_file))
        return cls(
            settings=settings,
            store=store,
            clients=ClientService(
                store, settings.api_key_pepper.get_secret_value()
            ),
            catalog=catalog,
            prompts=PromptService(store),
            rate_gate=RequestRateGate(),
        )

    async def close(self) -> None:
        """Release connections."""
        await self.store.close()


def _seed_specs(path: str) -> list[ModelSpec]:
    """The catalog seed, or nothing when the file is absent."""
    if not Path(path).exists():
        log.warning("catalog_seed_missing", path=path)
        return []
    return load_seed(path)
