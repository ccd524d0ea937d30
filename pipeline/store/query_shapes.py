"""Every query shape the API, the workers and the optimizer run.

A *shape* is what decides the index a server picks: the collection, the
filtered fields with their operators, and the sort. The values do not
matter. The registry below lists each shape with an example filter; the
tests create the project's indexes (:data:`pipeline.store.database.INDEXES`),
``explain`` each example and fail on a collection scan, and record the
commands the code actually sends, failing on a shape missing here. A new
query therefore needs a registry entry, and that entry needs an index.

Filters that address documents by ``_id`` (equality or ``$in``) are
always served by the primary index and need no entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

#: Which fields a filter uses and how, e.g.
#: ``{("clientId", "eq"), ("_id", "$lt")}``.
Shape = frozenset[tuple[str, str]]

_ANY_ID = ObjectId("000000000000000000000000")
_ANY_TIME = datetime(2026, 1, 1, tzinfo=UTC)
_LIVE = {"_metadata.isDeleted": False}


@dataclass(frozen=True)
class QueryShape:
    """One query shape and an example of it.

    Attributes:
        collection: Where it runs.
        example: A filter of this shape (values are placeholders).
        sort: The sort keys, in order (empty: unsorted).
        used_by: Where the code runs it.
    """

    collection: str
    example: Mapping[str, Any]
    used_by: str
    sort: tuple[tuple[str, int], ...] = field(default=())

    @property
    def key(self) -> tuple[str, Shape, tuple[str, ...]]:
        """What identifies the shape (collection, filter, sort fields)."""
        return (
            self.collection,
            shape_of(self.example),
            tuple(name for name, _ in self.sort),
        )


def _operator(value: Any) -> str:
    if isinstance(value, Mapping) and value:
        keys = sorted(value)
        if all(k.startswith("$") for k in keys):
            return "+".join(keys)
    return "eq"


def shape_of(query: Mapping[str, Any]) -> Shape:
    """The fields of a filter and the operators applied to them.

    ``$or``/``$and`` branches are folded into their parent's shape with
    the combinator as prefix, so one entry covers any number of branches.
    """
    parts: set[tuple[str, str]] = set()
    for name, value in query.items():
        if name in ("$or", "$and", "$nor") and isinstance(value, list):
            for branch in value:
                parts |= {(f"{name}.{f}", op) for f, op in shape_of(branch)}
        else:
            parts.add((name, _operator(value)))
    return frozenset(parts)


def addressed_by_id(query: Mapping[str, Any]) -> bool:
    """Whether the primary ``_id`` index serves the filter."""
    return ("_id", "eq") in shape_of(query) or ("_id", "$in") in shape_of(
        query
    )


def _by_client(collection: str, used_by: str, **more: Any) -> list[QueryShape]:
    """A client's live documents, newest first: first and next pages."""
    first = {"clientId": _ANY_ID, **more, **_LIVE}
    later = {**first, "_id": {"$lt": _ANY_ID}}
    newest = (("_id", -1),)
    return [
        QueryShape(collection, first, used_by, newest),
        QueryShape(collection, later, used_by, newest),
    ]


QUERY_SHAPES: list[QueryShape] = [
    # clients
    QueryShape(
        "clients", _LIVE, "ClientService.list (first page)", (("_id", -1),)
    ),
    QueryShape(
        "clients",
        {"_id": {"$lt": _ANY_ID}, **_LIVE},
        "ClientService.list (next pages)",
        (("_id", -1),),
    ),
    QueryShape(
        "clients",
        {"keyPrefix": "mk_0000", **_LIVE},
        "ClientService.authenticate by key",
    ),
    # models
    QueryShape("models", _LIVE, "ModelCatalog.list (admin)", (("name", 1),)),
    QueryShape(
        "models",
        {"active": True, **_LIVE},
        "ModelCatalog.list (clients)",
        (("name", 1),),
    ),
    QueryShape("models", {"name": "m", **_LIVE}, "ModelCatalog.get"),
    QueryShape(
        "models",
        {"name": "m", "active": True, **_LIVE},
        "ModelCatalog.get (active)",
    ),
    QueryShape(
        "models",
        {"name": {"$in": ["m"]}, "active": True, **_LIVE},
        "ModelCatalog.by_names (job validation)",
    ),
    QueryShape("models", {"name": "m"}, "ModelCatalog.create, seed"),
    # prompts
    *_by_client("prompts", "PromptService.list"),
    QueryShape(
        "prompt_versions",
        {"promptId": _ANY_ID, "version": 1, **_LIVE},
        "PromptService.get_version",
    ),
    QueryShape(
        "prompt_versions",
        {"promptId": _ANY_ID, "version": {"$in": [1]}, **_LIVE},
        "PromptService.versions_of",
    ),
    QueryShape(
        "prompt_versions",
        {"promptId": _ANY_ID, "version": {"$in": [1]}},
        "ItemStore.system_prompts (worker)",
    ),
    # jobs
    *_by_client("jobs", "JobService.list_jobs"),
    *_by_client("jobs", "JobService.list_jobs by status", status="PENDING"),
    QueryShape("jobs", {"active": True}, "ItemStore.active_jobs (worker)"),
    QueryShape(
        "jobs",
        {"clientId": _ANY_ID, "idempotencyKey": "k", **_LIVE},
        "JobSubmitter (idempotent resubmission)",
    ),
    QueryShape(
        "jobs",
        {"submitting": {"$in": [True, "abandoned"]}},
        "JobSubmitter.clean_abandoned",
    ),
    # items
    QueryShape(
        "items",
        {"leaseExpiresAt": {"$gte": _ANY_TIME}},
        "JobService.processing_counts, ItemStore.leased_* (worker)",
    ),
    QueryShape(
        "items",
        {"leaseExpiresAt": {"$gte": _ANY_TIME, "$lt": _ANY_TIME}},
        "ItemStore.leased_items (the worker's poll: expired leases)",
    ),
    # provider batches
    QueryShape(
        "provider_batches",
        {
            "state": {"$in": ["claimed", "submitted"]},
            "provider": "openai",
            "owner": "metasync-worker-openai-0",
        },
        "BatchLedger.open_records (worker's batch rounds)",
    ),
    QueryShape(
        "provider_batches",
        {"state": {"$in": ["claimed", "submitted"]}, "provider": "openai"},
        "BatchLedger.adopt_orphans (records of removed replicas)",
    ),
    # optimizer
    *_by_client("runs", "RunStore.list_runs"),
    *_by_client("datasets", "RunStore.list_datasets"),
    QueryShape("runs", {"clientId": _ANY_ID}, "runs_spend"),
    QueryShape(
        "runs",
        {"status": {"$in": ["QUEUED", "RUNNING"]}},
        "RunStore.orphans (optimizer restart)",
    ),
]


def registered() -> set[tuple[str, Shape, tuple[str, ...]]]:
    """The keys of :data:`QUERY_SHAPES`."""
    return {shape.key for shape in QUERY_SHAPES}


def unregistered(
    seen: Iterable[tuple[str, Mapping[str, Any], tuple[str, ...]]],
) -> list[tuple[str, Shape, tuple[str, ...]]]:
    """The queries among ``seen`` whose shape is not registered.

    Args:
        seen: (collection, filter, sort fields) of queries the code ran.

    Returns:
        Their shapes, once each; queries by ``_id`` are always fine.
    """
    known = registered()
    missing: list[tuple[str, Shape, tuple[str, ...]]] = []
    for collection, query, sort in seen:
        if addressed_by_id(query):
            continue
        key = (collection, shape_of(query), tuple(sort))
        if key not in known and key not in missing:
            missing.append(key)
    return missing
