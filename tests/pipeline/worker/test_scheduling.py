"""The scheduling policy on its own, and a policy of one class."""

from collections import deque
from collections.abc import Iterator, Sequence

from bson import ObjectId

from pipeline.jobs.item_ids import new_item_base
from pipeline.worker.backlog import Backlog, JobTrack
from pipeline.worker.scheduling import DefaultScheduling


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


def _fill(backlog, track, n, model="m"):
    backlog.add_job(track)
    backlog.add_ready(
        track.job_id,
        [
            {
                "_id": ObjectId(),
                "jobId": track.job_id,
                "seq": i,
                "model": model,
            }
            for i in range(n)
        ],
    )


def test_claims_keep_two_rounds_of_calls_in_hand():
    policy = DefaultScheduling()
    assert policy.claim_size(0, 8, max_batch=50) == 16
    assert policy.claim_size(5, 8, max_batch=50) == 11
    assert policy.claim_size(8, 8, max_batch=50) == 0
    assert policy.claim_size(0, 100, max_batch=50) == 50
    # A limiter with no slot yet counts as one: two rounds of one.
    assert policy.claim_size(0, 0, max_batch=50) == 2


def test_batch_items_wait_while_a_chat_call_waits():
    policy = DefaultScheduling()
    assert policy.batch_may_start(0)
    assert not policy.batch_may_start(1)


def test_the_turn_rotates_across_takes():
    backlog = Backlog(DefaultScheduling())
    a, b = _job(ObjectId()), _job(ObjectId())
    _fill(backlog, a, 5)
    _fill(backlog, b, 5)
    first = [i["jobId"] for i in backlog.take("m", 2)]
    second = [i["jobId"] for i in backlog.take("m", 2)]
    assert first == [a.job_id, b.job_id]
    assert second == [b.job_id, a.job_id]


def test_a_client_whose_jobs_are_gone_leaves_the_turn():
    policy = DefaultScheduling()
    backlog = Backlog(policy)
    gone, kept = _job(ObjectId()), _job(ObjectId())
    _fill(backlog, gone, 1)
    _fill(backlog, kept, 1)
    backlog.take("m", 1)
    backlog.drop_job(gone.job_id)
    backlog.take("m", 1)
    assert list(policy._turn) == [kept.client_id]


class _PriorityFirst:
    """Highest priority across all clients; no turns, no chat first."""

    def take_order(
        self, jobs: Sequence[JobTrack], model: str
    ) -> Iterator[JobTrack]:
        while True:
            ready = [t for t in jobs if t.ready_count(model)]
            if not ready:
                return
            yield max(ready, key=lambda t: t.priority)

    def jobs_to_read(self, jobs, low_water):
        return [t for t in jobs if not t.fully_read and not t.loading]

    def claim_size(self, waiting, capacity, max_batch):
        return max_batch

    def batch_may_start(self, chat_waiting):
        return True


def test_a_new_policy_is_one_class():
    backlog = Backlog(_PriorityFirst())
    low, high = _job(ObjectId(), priority=0), _job(ObjectId(), priority=9)
    _fill(backlog, low, 3)
    _fill(backlog, high, 3)
    taken = [i["jobId"] for i in backlog.take("m", 4)]
    assert taken == [high.job_id] * 3 + [low.job_id]
