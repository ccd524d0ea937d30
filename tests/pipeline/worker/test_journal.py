"""The journaled write on its own: entries, counts, settlement."""

import uuid

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from pipeline.errors import InvalidTransition
from pipeline.jobs.aggregation import initial_counts
from pipeline.states import Status
from pipeline.store import Store, create_mongo_client
from pipeline.usage import ClientUsage
from pipeline.worker.journal import (
    Change,
    Journal,
    journal_moves,
    moves_delta,
    moves_usage,
)
from tests.support.flaky import FlakyCollection

S = Status
LANE = "worker-0/live"


def _change(job_id, target=S.PROCESSED, source=S.PROCESSING, owner="t"):
    item = {"_id": ObjectId(), "jobId": job_id, "leaseOwner": owner}
    return Change(
        item=item,
        target=target,
        source=source,
        filter={"_id": item["_id"], "status": source, "leaseOwner": owner},
        update={"$set": {"status": target}},
        usage=(1, 2, 0.5),
    )


# -- what an entry records (no database) ---------------------------------


NO_EST = (None, "m1")
NONE = (None, None)


def test_moves_are_grouped_by_job_and_skip_uncounted_changes():
    a, b = ObjectId(), ObjectId()
    done, retry, other = (
        _change(a),
        _change(a, target=S.PENDING),
        _change(b, target=S.FAILED),
    )
    done.answered_by = "m1"
    moves = journal_moves([done, retry, other])
    # [id, source, target, tokens in, tokens out, cost, estimate, by]
    assert moves == {
        a: [[done.item["_id"], "PROCESSING", "PROCESSED", 1, 2, 0.5, *NO_EST]],
        b: [[other.item["_id"], "PROCESSING", "FAILED", 1, 2, 0.5, *NONE]],
    }
    assert not retry.counted


def test_a_requeue_leaves_its_final_count():
    change = _change(ObjectId(), target=S.PENDING, source=S.FAILED)
    assert change.counted
    delta = moves_delta(journal_moves([change])[change.item["jobId"]])
    assert delta.counts == {S.FAILED: -1}
    assert (delta.input_tokens, delta.output_tokens) == (1, 2)


def test_client_usage_follows_moves_into_and_out_of_final_statuses():
    job = ObjectId()
    done = _change(job)
    done.item["estCost"] = 0.25
    canceled = _change(job, target=S.CANCELED, source=S.PENDING)
    canceled.item["estCost"] = 0.5
    requeued = _change(job, target=S.PENDING, source=S.FAILED)
    requeued.item["estCost"] = 0.125
    moves = journal_moves([done, canceled, requeued])[job]
    usage = moves_usage(moves)
    assert usage.pending_items == -1
    assert usage.reserved_cost == pytest.approx(-0.25 - 0.5 + 0.125)
    assert usage.spent_cost == pytest.approx(3 * 0.5)


def test_items_stored_before_reservations_release_nothing():
    # Items of jobs submitted before quotas were counters carry no
    # estimate: they never reserved a place, so finishing them must not
    # give one back (their client's pending count would go negative).
    job = ObjectId()
    done, failed = _change(job), _change(job, target=S.FAILED)
    moves = journal_moves([done, failed])[job]
    usage = moves_usage(moves)
    assert usage.pending_items == 0
    assert usage.reserved_cost == 0
    assert usage.spent_cost == pytest.approx(2 * 0.5)


# -- against a database --------------------------------------------------


@pytest.fixture
async def db(mongo_uri):
    store = Store(
        create_mongo_client(mongo_uri), f"journal-{uuid.uuid4().hex[:8]}"
    )
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


async def _job(db, n):
    """A job of ``n`` items, all leased (token ``t``), and its changes."""
    job_id = ObjectId()
    await db.raw("jobs").insert_one(
        {
            "_id": job_id,
            "status": "PROCESSING",
            "startedAt": 1,
            "totalItems": n,
            "counts": initial_counts(),
            "journal": [],
        }
    )
    changes = [_change(job_id) for _ in range(n)]
    await db.raw("items").insert_many(
        [
            {**c.item, "status": "PROCESSING", "leaseOwner": "t"}
            for c in changes
        ]
    )
    return job_id, changes


async def _doc(db, job_id):
    return await db.raw("jobs").find_one({"_id": job_id})


def _journal(db):
    return Journal(db.raw("items"), db.raw("jobs"), LANE)


@pytest.mark.anyio
async def test_a_write_counts_its_items_and_leaves_no_entry(db):
    job_id, changes = await _job(db, 2)
    written = await _journal(db).write(changes)
    assert written == changes
    doc = await _doc(db, job_id)
    assert doc["counts"][S.PROCESSED] == 2
    assert doc["usage"] == {"inputTokens": 2, "outputTokens": 4}
    assert doc["journal"] == [] and doc["status"] == "PROCESSED"


@pytest.mark.anyio
async def test_an_item_whose_guard_fails_is_neither_written_nor_counted(db):
    job_id, changes = await _job(db, 2)
    await db.raw("items").update_one(
        {"_id": changes[1].item["_id"]}, {"$set": {"leaseOwner": "other"}}
    )
    written = await _journal(db).write(changes)
    assert written == changes[:1]
    assert (await _doc(db, job_id))["counts"][S.PROCESSED] == 1


@pytest.mark.anyio
async def test_a_dead_writers_entry_is_settled_from_the_items(db):
    job_id, changes = await _job(db, 2)
    dead = _journal(db)
    dead.jobs = flaky = FlakyCollection(dead.jobs)
    flaky.fail_next("bulk_write", after=1)  # dies before counting
    with pytest.raises(AutoReconnect):
        await dead.write(changes)
    doc = await _doc(db, job_id)
    assert [e["lane"] for e in doc["journal"]] == [LANE]
    assert doc["counts"][S.PROCESSED] == 0 and doc["active"]

    successor = Journal(db.raw("items"), db.raw("jobs"), "worker-0/next")
    assert await successor.recover(doc, {LANE}) == 1
    doc = await _doc(db, job_id)
    assert doc["journal"] == [] and doc["counts"][S.PROCESSED] == 2
    assert not doc["active"]


@pytest.mark.anyio
async def test_an_unheld_failed_batch_is_settled_before_the_next_write(db):
    job_id, changes = await _job(db, 3)
    journal = _journal(db)
    journal.items = flaky = FlakyCollection(journal.items)
    flaky.fail_next("bulk_write")  # the entry is recorded, no item written
    with pytest.raises(AutoReconnect):
        await journal.write(changes[:2])
    await journal.write(changes[2:])
    doc = await _doc(db, job_id)
    assert doc["journal"] == [] and doc["counts"][S.PROCESSED] == 1


@pytest.mark.anyio
async def test_a_held_batch_is_written_once_by_its_retry(db):
    job_id, changes = await _job(db, 3)
    journal = _journal(db)
    journal.jobs = flaky = FlakyCollection(journal.jobs)
    # The counts are applied but their reply is lost.
    flaky.fail_next("bulk_write", applied=True, after=1)
    with pytest.raises(AutoReconnect):
        await journal.write(changes[:2], "b1", held=True)
    await journal.write(changes[2:])  # does not settle b1 meanwhile
    await journal.write(changes[:2], "b1", held=True)
    doc = await _doc(db, job_id)
    assert doc["journal"] == [] and doc["counts"][S.PROCESSED] == 3
    assert doc["usage"] == {"inputTokens": 3, "outputTokens": 6}


@pytest.mark.anyio
async def test_a_change_the_item_table_forbids_writes_nothing(db):
    job_id, changes = await _job(db, 2)
    illegal = _change(job_id, target=S.PENDING, source=S.CANCELED)
    with pytest.raises(InvalidTransition):
        await _journal(db).write([changes[0], illegal])
    item = await db.raw("items").find_one({"_id": changes[0].item["_id"]})
    assert item["status"] == "PROCESSING"
    assert (await _doc(db, job_id))["journal"] == []


@pytest.mark.anyio
async def test_client_counters_move_once_when_a_dead_writers_entry_settles(
    db,
):
    client = ObjectId()
    await db.raw("clients").insert_one(
        {"_id": client, "usage": {"pendingItems": 2, "reservedCost": 1.0}}
    )
    job_id, changes = await _job(db, 2)
    for change in changes:
        change.item.update(clientId=client, estCost=0.5)
    dead = Journal(db.raw("items"), db.raw("jobs"), LANE, db.raw("clients"))
    dead.jobs = flaky = FlakyCollection(dead.jobs)
    # The clients' counters move, then the writer dies before the jobs'.
    flaky.fail_next("bulk_write", after=1)
    with pytest.raises(AutoReconnect):
        await dead.write(changes)
    successor = Journal(
        db.raw("items"), db.raw("jobs"), "worker-0/next", db.raw("clients")
    )
    assert await successor.recover(await _doc(db, job_id), {LANE}) == 1
    usage = await ClientUsage(db.raw("clients")).read(client)
    assert usage.pending_items == 0
    assert usage.reserved_cost == pytest.approx(0.0)
    assert usage.spent_cost == pytest.approx(2 * 0.5)
    assert (await _doc(db, job_id))["counts"][S.PROCESSED] == 2
