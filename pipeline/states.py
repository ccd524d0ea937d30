"""States of items and jobs, and who may move them where.

The allowed transitions are data: one table per resource and actor.

* Jobs: a caller's change is guarded in the database by :func:`sources`
  (the check and the change are one update), so an illegal change is a
  409 naming the current status. The system never sets a job's status:
  it is derived from the counts.
* Items: clients and admins act on jobs; workers change the items, on
  their behalf for a cancel or a requeue. Every item change a worker
  writes is checked against :data:`ITEM_TRANSITIONS` where it is written
  (claims in ``ItemStore.claim``, everything else in
  :mod:`pipeline.worker.journal`), and each write's filter requires the
  source status, so the database applies it only from there.
"""

from __future__ import annotations

from enum import StrEnum

from pipeline.errors import InvalidTransition


class Status(StrEnum):
    """Status of an item or a job."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    CONSUMED = "CONSUMED"
    ERROR_CONSUMING = "ERROR_CONSUMING"


class Actor(StrEnum):
    """Who asks for a transition."""

    SYSTEM = "system"
    CLIENT = "client"
    ADMIN = "admin"


S = Status
Table = dict[Status, frozenset[Status]]

_ITEM_CLIENT: Table = {
    S.PENDING: frozenset({S.CANCELED}),
    S.PROCESSED: frozenset({S.CONSUMED, S.ERROR_CONSUMING}),
}

#: Item transitions by actor. Workers (system) move items through
#: processing; PROCESSING -> PENDING is a retry or an expired lease.
ITEM_TRANSITIONS: dict[Actor, Table] = {
    Actor.SYSTEM: {
        S.PENDING: frozenset({S.PROCESSING, S.CANCELED}),
        S.PROCESSING: frozenset({S.PROCESSED, S.FAILED, S.PENDING}),
    },
    Actor.CLIENT: _ITEM_CLIENT,
    Actor.ADMIN: {**_ITEM_CLIENT, S.FAILED: frozenset({S.PENDING})},
}

_JOB_CLIENT: Table = {
    # A job still has pending items while PROCESSING: canceling it
    # cancels those; items already running finish and are kept.
    S.PENDING: frozenset({S.CANCELED}),
    S.PROCESSING: frozenset({S.CANCELED}),
    S.PROCESSED: frozenset({S.CONSUMED, S.ERROR_CONSUMING}),
    S.FAILED: frozenset({S.CONSUMED, S.ERROR_CONSUMING}),
}

#: Job transitions a caller may ask for. The system never sets a job's
#: status directly: it is derived from the item counts
#: (:mod:`pipeline.jobs.aggregation`).
JOB_TRANSITIONS: dict[Actor, Table] = {
    Actor.SYSTEM: {},
    Actor.CLIENT: _JOB_CLIENT,
    Actor.ADMIN: {
        **_JOB_CLIENT,
        # Requeue: failed items go back to PENDING.
        S.FAILED: _JOB_CLIENT[S.FAILED] | {S.PENDING},
        S.PROCESSED: _JOB_CLIENT[S.PROCESSED] | {S.PENDING},
    },
}

#: Statuses in which nothing more will happen to an item by itself.
FINAL_ITEM_STATUSES = frozenset(
    {S.PROCESSED, S.FAILED, S.CANCELED, S.CONSUMED, S.ERROR_CONSUMING}
)

#: Job statuses set by a caller that the item counts never override.
STICKY_JOB_STATUSES = frozenset({S.CANCELED, S.CONSUMED, S.ERROR_CONSUMING})


def allowed(
    table: dict[Actor, Table], actor: Actor, current: Status, target: Status
) -> bool:
    """Whether ``actor`` may move something from ``current`` to ``target``."""
    return target in table[actor].get(current, frozenset())


def check(
    table: dict[Actor, Table],
    resource: str,
    actor: Actor,
    current: str,
    target: Status,
) -> None:
    """Refuse a transition the table does not allow.

    Raises:
        InvalidTransition: A 409 naming the current status.
    """
    if not allowed(table, actor, Status(current), target):
        raise InvalidTransition(resource, current, target)


def sources(
    table: dict[Actor, Table], actor: Actor, target: Status
) -> list[Status]:
    """Every status from which ``actor`` may reach ``target``.

    Used as the guard of a conditional database update, so the check
    and the change are one atomic operation.
    """
    return [s for s, targets in table[actor].items() if target in targets]
