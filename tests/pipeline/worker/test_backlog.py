from collections import deque

from bson import ObjectId

from pipeline.jobs.item_ids import WINDOW_ITEMS, new_item_base
from pipeline.worker.backlog import (
    Backlog,
    JobTrack,
    owned_windows,
    window_range,
)


def _job(client, priority=0, total=10):
    job_id = ObjectId()
    return JobTrack(
        job_id=job_id,
        client_id=client,
        priority=priority,
        total_items=total,
        item_base=new_item_base(),
        max_attempts=3,
        cache=False,
        windows=deque(),
    )


def _items(track, n, model="m"):
    return [
        {"_id": ObjectId(), "jobId": track.job_id, "model": model, "seq": i}
        for i in range(n)
    ]


def test_clients_take_turns():
    backlog = Backlog()
    big_client, small_client = ObjectId(), ObjectId()
    big = _job(big_client)
    small = _job(small_client)
    backlog.add_job(big)
    backlog.add_job(small)
    backlog.add_ready(big.job_id, _items(big, 1000))
    backlog.add_ready(small.job_id, _items(small, 10))
    taken = backlog.take("m", 20)
    jobs = [item["jobId"] for item in taken]
    assert jobs.count(small.job_id) == 10
    assert jobs.count(big.job_id) == 10


def test_priority_then_age_within_a_client():
    backlog = Backlog()
    client = ObjectId()
    old = _job(client)
    new_urgent = _job(client, priority=5)
    backlog.add_job(old)
    backlog.add_job(new_urgent)
    backlog.add_ready(old.job_id, _items(old, 3))
    backlog.add_ready(new_urgent.job_id, _items(new_urgent, 3))
    taken = [i["jobId"] for i in backlog.take("m", 6)]
    assert taken == [new_urgent.job_id] * 3 + [old.job_id] * 3


def test_items_keep_their_order_within_a_job():
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    backlog.add_ready(track.job_id, _items(track, 5))
    assert [i["seq"] for i in backlog.take("m", 5)] == [0, 1, 2, 3, 4]


def test_models_are_separate_queues():
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    backlog.add_ready(
        track.job_id, _items(track, 2, "a") + _items(track, 3, "b")
    )
    assert backlog.ready_count("a") == 2 and backlog.ready_count("b") == 3
    assert len(backlog.take("b", 10)) == 3
    assert backlog.ready_count("a") == 2


def test_retries_wait_for_their_time_then_go_first():
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    backlog.add_ready(track.job_id, _items(track, 2))
    retry = {"_id": ObjectId(), "jobId": track.job_id, "model": "m", "seq": 99}
    backlog.schedule_retry(retry, due=10.0)
    assert backlog.release_due(5.0) == 0
    assert backlog.next_retry_due() == 10.0
    assert backlog.release_due(10.0) == 1
    assert backlog.take("m", 1)[0]["seq"] == 99


def test_canceled_jobs_give_nothing():
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    backlog.add_ready(track.job_id, _items(track, 3))
    track.canceled = True
    assert backlog.take("m", 3) == []


def test_replicas_split_every_job_between_them():
    job_id = ObjectId()
    total = 10 * WINDOW_ITEMS + 1
    parts = [owned_windows(job_id, total, r, 3) for r in range(3)]
    windows = sorted(w for part in parts for w in part)
    assert windows == list(range(11))
    assert all(len(part) >= 3 for part in parts)
    assert list(owned_windows(job_id, total, 0, 1)) == list(range(11))


def test_read_ahead_is_bounded_per_client():
    backlog = Backlog()
    client = ObjectId()
    tracks = [_job(client, total=5000) for _ in range(5)]
    for track in tracks:
        track.windows = deque(range(10))
        backlog.add_job(track)
    wanted = backlog.jobs_to_read(low_water=50)
    assert len(wanted) == 2
    assert {t.job_id for t in wanted} == {t.job_id for t in tracks[:2]}


def test_the_last_window_ends_with_the_job():
    total = 2 * WINDOW_ITEMS + 7
    assert window_range(0, total) == (0, WINDOW_ITEMS)
    assert window_range(2, total) == (2 * WINDOW_ITEMS, total)


def test_an_item_is_queued_once_however_often_it_is_found():
    # A requeue sweep and a window read can both find the same item.
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    items = _items(track, 3)
    backlog.add_ready(track.job_id, items)
    backlog.add_ready(track.job_id, [dict(i) for i in items])
    backlog.schedule_retry(dict(items[0]), due=0.0)
    assert backlog.release_due(1.0) == 0
    taken = backlog.take("m", 10)
    assert [i["_id"] for i in taken] == [i["_id"] for i in items]
    # Once taken (claimed), it may be queued again (a retry).
    backlog.schedule_retry(items[1], due=0.0)
    assert backlog.release_due(1.0) == 1
    backlog.put_back(track.job_id, "m", [items[1], items[2]])
    assert [i["_id"] for i in backlog.take("m", 10)] == [
        items[2]["_id"],
        items[1]["_id"],
    ]


def test_dropping_a_job_forgets_its_queued_items():
    backlog = Backlog()
    track = _job(ObjectId())
    backlog.add_job(track)
    items = _items(track, 2)
    backlog.add_ready(track.job_id, items)
    backlog.schedule_retry(items[0], due=5.0)
    backlog.drop_job(track.job_id)
    backlog.add_job(track)
    track.ready.clear()
    backlog.add_ready(track.job_id, items)
    assert len(backlog.take("m", 10)) == 2
