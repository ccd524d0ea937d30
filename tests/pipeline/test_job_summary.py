from datetime import UTC, datetime

from bson import ObjectId

from pipeline.jobs.shapes import (
    DEFAULT_MAX_ATTEMPTS,
    JobOptions,
    JobSummary,
    job_summary,
    new_job,
)
from pipeline.states import Status


def _job(**options):
    return new_job(
        ObjectId(),
        ObjectId(),
        ObjectId(),
        12,
        JobOptions(**options),
        ["m1"],
        ["openai"],
        None,
    )


def test_a_summary_round_trips_through_its_document():
    job = _job(priority=4, max_attempts=2, cache=True)
    job["startedAt"] = datetime(2026, 1, 1, tzinfo=UTC)
    summary = JobSummary.from_doc(job)
    assert summary.priority == 4 and summary.max_attempts == 2
    assert summary.cache and summary.providers == ("openai",)
    assert summary.status == Status.PENDING and not summary.deleted
    assert JobSummary.from_doc(summary.to_doc()) == summary


def test_a_worker_is_sent_the_summary_fields_only():
    job = _job()
    sent = job_summary(job)
    assert "counts" not in sent and "usage" not in sent
    assert sent["_metadata"] == {"isDeleted": False}
    assert JobSummary.from_doc(sent) == JobSummary.from_doc(job)


def test_a_document_without_options_reads_as_the_api_defaults():
    bare = {
        "_id": ObjectId(),
        "clientId": ObjectId(),
        "totalItems": 1,
        "itemBase": ObjectId(),
        "status": "PENDING",
    }
    summary = JobSummary.from_doc(bare)
    defaults = JobOptions()
    assert summary.max_attempts == defaults.max_attempts
    assert summary.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert summary.priority == defaults.priority
    assert summary.cache == defaults.cache
    # No providers recorded: every provider's worker looks at the job.
    assert summary.providers is None and summary.models == ()
