"""What a client has spent or holds of its budget.

Jobs and chat completions are counted on the client document
(:mod:`pipeline.usage`: spent and reserved USD). Model calls of
optimization runs are charged like batch items too, so a client's
budget covers them: a run keeps its spending in its ``progress`` (kept
current after every step of the search), read here.
"""

from __future__ import annotations

from bson import ObjectId

from pipeline.store import Store
from pipeline.usage import ClientUsage


async def runs_spend(store: Store, client_id: ObjectId) -> float:
    """USD spent by a client's optimization runs (deleted ones included)."""
    runs = (
        await store.raw("runs")
        .find({"clientId": client_id}, {"progress.cost": 1})
        .to_list()
    )
    return sum((r.get("progress") or {}).get("cost", 0.0) for r in runs)


async def client_spend(store: Store, client_id: ObjectId) -> float:
    """USD a client spent or holds reserved: jobs, chat and runs."""
    usage = await ClientUsage(store.raw("clients")).read(client_id)
    return (
        usage.spent_cost
        + usage.reserved_cost
        + await runs_spend(store, client_id)
    )
