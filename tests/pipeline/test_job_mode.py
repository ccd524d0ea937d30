"""The job options of batch mode: mode, deadline, and what a job stores."""

from datetime import timedelta

import pytest
from bson import ObjectId

from pipeline.errors import ValidationFailed
from pipeline.jobs.mode import BATCH_WINDOW, job_mode, parse_duration
from pipeline.jobs.shapes import JobOptions, JobSummary, new_item, new_job


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("45m", timedelta(minutes=45)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
    ],
)
def test_durations_are_read(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-3h", "3w", "0h"])
def test_bad_durations_name_the_field(text):
    with pytest.raises(ValidationFailed) as info:
        parse_duration(text)
    assert "deadline" in str(info.value.details)


def test_mode_defaults_to_live_and_a_deadline_alone_means_auto():
    assert job_mode(None, None) == ("live", None)
    assert job_mode(None, "48h") == ("auto", timedelta(hours=48))
    assert job_mode("batch", None) == ("batch", None)
    assert job_mode("live", "1h") == ("live", timedelta(hours=1))


def test_auto_needs_a_deadline_and_batch_the_whole_window():
    with pytest.raises(ValidationFailed) as info:
        job_mode("auto", None)
    assert "deadline" in str(info.value.details)
    with pytest.raises(ValidationFailed) as info:
        job_mode("batch", "2h")
    assert "24h" in str(info.value.details)
    assert job_mode("batch", "24h") == ("batch", BATCH_WINDOW)


def test_a_batch_job_stores_its_mode_deadline_and_live_only_providers():
    options = JobOptions(mode="auto", deadline=timedelta(hours=30))
    job = new_job(
        ObjectId(),
        ObjectId(),
        ObjectId(),
        2,
        options,
        ["m1", "m2"],
        ["azure_inference", "openai"],
        None,
    )
    assert job["mode"] == "auto"
    created = job["_id"].generation_time
    assert job["deadline"] - created == timedelta(hours=30)
    assert job["liveOnlyProviders"] == ["azure_inference"]
    summary = JobSummary.from_doc(job)
    assert (summary.mode, summary.deadline) == ("auto", job["deadline"])
    assert JobSummary.from_doc(summary.to_doc()) == summary
    item = new_item(
        job["_id"],
        job["clientId"],
        job["itemBase"],
        0,
        {},
        3,
        {},
        mode="auto",
        deadline=job["deadline"],
        cache=True,
    )
    # A worker decides batch or live, when to leave a batch, and whether
    # the result cache applies, by item.
    assert (item["mode"], item["deadline"]) == ("auto", job["deadline"])
    assert item["cache"] is True


def test_a_live_job_stores_nothing_new_on_its_items():
    job = new_job(
        ObjectId(),
        ObjectId(),
        ObjectId(),
        1,
        JobOptions(),
        ["m"],
        ["openai"],
        None,
    )
    assert job["mode"] == "live" and job["deadline"] is None
    assert job["liveOnlyProviders"] == []
    item = new_item(job["_id"], job["clientId"], job["itemBase"], 0, {}, 3, {})
    assert "mode" not in item
