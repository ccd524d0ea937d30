"""Jobs written straight to the database, workers woken through Ray.

What ``POST /jobs`` does, without the HTTP app: the same submitter
(validation, quotas, idempotency, the all-or-nothing insert) and the
same notification of the provider workers. The driver process must
have joined the cluster (:mod:`pipeline.connect`); the client is
the one the key names, so quotas and ownership hold as over HTTP.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from pipeline.batch.backend import PromptInfo, ResultItem
from pipeline.catalog import ModelCatalog
from pipeline.clients import Client, ClientService
from pipeline.cluster.handles import WorkerHandles
from pipeline.errors import InvalidTransition
from pipeline.jobs.service import JobService
from pipeline.jobs.shapes import JobOptions, job_summary
from pipeline.jobs.submission import JobSubmitter
from pipeline.jobs.validation import ItemSpec
from pipeline.prompts import PromptService
from pipeline.settings import Settings
from pipeline.states import Actor, Status
from pipeline.store import Store, create_mongo_client
from pipeline.store.deployed_version import DeployedVersion
from pipeline.store.document_collection import Document


class DirectBackend:
    """A client's jobs in the database the settings name."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: Client,
        workers: WorkerHandles,
    ) -> None:
        self._settings = settings
        self._store = store
        self._client = client
        self._workers = workers
        self._catalog = ModelCatalog(store)
        self._prompts = PromptService(store)
        self._submitter = JobSubmitter(
            store, self._catalog, self._prompts, settings
        )
        self._jobs = JobService(store)
        self._job_docs: dict[str, Document] = {}

    @classmethod
    async def open(cls, settings: Settings, api_key: str) -> DirectBackend:
        """Connect and authenticate the client.

        Raises:
            Unauthorized: The key names no active client.
        """
        assert settings.db_connection_string
        store = Store(
            create_mongo_client(
                settings.db_connection_string, app_name="metasync-batch"
            ),
            settings.db_name,
        )
        try:
            await store.ensure_indexes()
            clients = ClientService(
                store, settings.api_key_pepper.get_secret_value()
            )
            client = await clients.authenticate(api_key)
            workers = WorkerHandles(settings)
            await workers.follow_deployed(DeployedVersion(store))
        except BaseException:
            await store.close()
            raise
        return cls(settings, store, client, workers)

    @property
    def target(self) -> str:
        """The database (its name; the URI may hold a password)."""
        return f"local:{self._settings.db_name}"

    @property
    def max_job_items(self) -> int | None:
        """``MAX_ITEMS_PER_JOB``."""
        return self._settings.max_items_per_job

    @property
    def _client_id(self) -> ObjectId:
        return self._client.id

    async def model_names(self) -> set[str]:
        """Names of the active models of the catalog."""
        models = await self._catalog.list(active_only=True)
        return {model["name"] for model in models}

    async def prompt(
        self, prompt_id: str, version: int | None
    ) -> PromptInfo | None:
        """The client's prompt (a version, or the latest)."""
        if not ObjectId.is_valid(prompt_id):
            return None
        key = (ObjectId(prompt_id), version)
        found = await self._prompts.versions_of(self._client_id, {key})
        if key not in found:
            return None
        return PromptInfo(user_template=found[key].get("userTemplate"))

    async def submit(self, items: list[ItemSpec], options: JobOptions) -> str:
        """Store a job as ``POST /jobs`` does, and wake its workers."""
        job, created = await self._submitter.submit(
            self._client.id, self._client.quotas, items, options
        )
        if created:
            self._workers.notify_job(job["providers"], job_summary(job))
        return str(job["_id"])

    async def results(
        self, job_id: str, cursor: int, limit: int
    ) -> list[ResultItem]:
        """Items ``cursor`` to ``cursor + limit`` of a job, in order."""
        job = self._job_docs.get(job_id)
        if job is None:
            # Only ``itemBase`` and ``totalItems`` are read, which never
            # change: one read per job is enough.
            job = await self._jobs.get(self._client_id, job_id)
            self._job_docs[job_id] = job
        items, _ = await self._jobs.results_page(job, cursor, limit, None)
        return [ResultItem.from_doc(item) for item in items]

    async def find_job(self, key: str) -> str | None:
        """The client's live job made with this idempotency key."""
        job = await self._store.documents("jobs").find_one(
            {"clientId": self._client_id, "idempotencyKey": key}, {"_id": 1}
        )
        return None if job is None else str(job["_id"])

    async def cancel(self, job_id: str) -> None:
        """Cancel a job; its workers cancel its pending items."""
        try:
            job = await self._transition(job_id, Status.CANCELED)
        except InvalidTransition:
            return
        self._workers.notify_job(job["providers"], job_summary(job))

    async def consume(self, job_id: str) -> str:
        """Mark a processed job consumed; returns the job's status."""
        try:
            job = await self._transition(job_id, Status.CONSUMED)
        except InvalidTransition as error:
            return str(error.details["currentStatus"])
        return str(job["status"])

    async def close(self) -> None:
        """Release the database connection."""
        await self._store.close()

    async def _transition(self, job_id: str, target: Status) -> Any:
        return await self._jobs.transition(
            self._client_id, job_id, target, Actor.CLIENT
        )
