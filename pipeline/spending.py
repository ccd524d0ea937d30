"""What a client has spent: its jobs' cost and its optimization runs'.

Model calls of optimization runs are charged like batch items, so a
client's budget quota covers both. Runs keep their spending in their
``progress`` (kept current after every step of the search).
"""

from __future__ import annotations

from bson import ObjectId

from pipeline.store import Store


async def client_spend(store: Store, client_id: ObjectId) -> float:
    """USD spent by a client's jobs and runs (deleted ones included)."""
    jobs = (
        await store.raw("jobs")
        .find({"clientId": client_id}, {"cost": 1})
        .to_list()
    )
    runs = (
        await store.raw("runs")
        .find({"clientId": client_id}, {"progress.cost": 1})
        .to_list()
    )
    return sum(j.get("cost", 0.0) for j in jobs) + sum(
        (r.get("progress") or {}).get("cost", 0.0) for r in runs
    )
