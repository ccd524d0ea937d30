"""What a client has spent or holds of its budget.

Jobs and chat completions are counted on the client document
(:mod:`pipeline.usage`: spent and reserved USD). Model calls of
optimization runs are charged like batch items too, so a client's
budget covers them: a run keeps its spending in its ``progress`` (kept
current after every step of the search), read here.
"""

from __future__ import annotations

from bson import ObjectId

from pipeline.errors import DatabaseUnavailable, QuotaExceeded
from pipeline.logging import get_logger
from pipeline.store import Store, safe_operation
from pipeline.usage import BUDGET_RETRY_S, ClientUsage

log = get_logger(__name__)


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


class ChatCharges:
    """The budget of chat completions: checked before, charged after.

    A chat call is not reserved: its estimate must fit in what is left
    when it starts, and its real cost is added to the client's spent
    USD when it ends (calls already running may together pass the
    budget by their own cost).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._usage = ClientUsage(store.raw("clients"))

    async def check(
        self, client_id: ObjectId, budget: float | None, estimate: float
    ) -> None:
        """Refuse a call whose estimate does not fit in the budget.

        Raises:
            QuotaExceeded: It does not fit.
        """
        if budget is None:
            return
        left = budget - await runs_spend(self._store, client_id)
        if not await self._usage.within_budget(client_id, left, estimate):
            raise QuotaExceeded(
                f"the call's estimated cost ({estimate:.4f} USD) does not "
                f"fit in the budget of {budget} USD",
                retry_after=BUDGET_RETRY_S,
            )

    async def charge(self, client_id: ObjectId, key: str, cost: float) -> None:
        """Add a finished call's cost to the client's spent USD.

        The answer is the client's whatever happens here: if the
        database stays unreachable the charge is logged, not raised.
        """
        try:
            await safe_operation(
                lambda: self._usage.charge(client_id, key, cost),
                what="charge a chat completion",
            )
        except DatabaseUnavailable:
            log.warning(
                "chat_charge_lost", client_id=str(client_id), cost=cost
            )
