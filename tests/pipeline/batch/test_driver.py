"""The batch driver against an in-memory service: once, and only once."""

import asyncio
import json

import pytest

from pipeline.batch import driver as driver_module
from pipeline.batch.driver import BatchDriver
from pipeline.batch.errors import BatchError, InvalidInput, StateMismatch
from pipeline.batch.records import BatchOptions
from pipeline.batch.state import load_state, state_path
from pipeline.errors import ValidationFailed
from tests.pipeline.batch.fake_jobs import Crash, FakeJobs

FAST = BatchOptions(chunk_items=10, active_jobs=2, poll_interval_s=0)


def _input(tmp_path, n=25, bad=()):
    path = tmp_path / "in.jsonl"
    lines = []
    for i in range(n):
        model = "nope" if i in bad else "m"
        if i % 2:
            lines.append(
                json.dumps(
                    {
                        "custom_id": f"c{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": model,
                            "messages": [{"role": "user", "content": f"q{i}"}],
                        },
                    }
                )
            )
        else:
            lines.append(
                json.dumps(
                    {
                        "customId": f"c{i}",
                        "model": model,
                        "userContent": f"q{i}",
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(fake, tmp_path, options=FAST, progress=None):
    driver = BatchDriver(
        fake, tmp_path / "in.jsonl", tmp_path / "out.jsonl", options, progress
    )
    return asyncio.run(driver.run())


def _output(tmp_path):
    text = (tmp_path / "out.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _assert_exactly_once(tmp_path, fake, n=25):
    lines = _output(tmp_path)
    ids = [line["custom_id"] for line in lines]
    assert sorted(ids) == sorted(f"c{i}" for i in range(n))
    # Each request reached the provider once, whatever happened.
    assert len(fake.calls) == len(set(fake.calls))
    return lines


def test_a_batch_writes_every_result_once(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(step=3, fail={"c4"}, settle_lag=2)
    reports = []
    result = _run(fake, tmp_path, progress=reports.append)
    lines = _assert_exactly_once(tmp_path, fake)
    assert len(fake.calls) == 25
    assert fake.submissions == 3 and len(fake.jobs) == 3
    # Consumed, although the first answers said "still processing".
    assert all(job.consumed for job in fake.jobs.values())
    assert fake.settle_lag == 0
    # Chunks interleave as their results come; each keeps input order.
    written = [int(line["custom_id"][1:]) for line in lines]
    for start in (0, 10, 20):
        mine = [i for i in written if start <= i < start + 10]
        assert mine == sorted(mine)
    by_id = {line["custom_id"]: line for line in lines}
    assert by_id["c4"]["error"]["code"] == "permanent"
    answer = by_id["c3"]["response"]["body"]["choices"][0]["message"]
    assert answer["content"] == "echo: q3"
    totals = result.totals
    assert (totals.written, totals.failed) == (25, 1)
    assert totals.input_tokens == 24 * 3 and totals.cost == 12.0
    assert reports[-1].phase == "running" and reports[-1].done == 25
    assert reports[-1].jobs_submitted == reports[-1].jobs_total == 3
    assert any(r.phase == "validating" for r in reports)
    assert not result.resumed
    # Running a finished batch again changes nothing.
    again = _run(fake, tmp_path)
    assert again.resumed and again.totals.written == 25
    assert _output(tmp_path) == lines and fake.submissions == 3


@pytest.mark.parametrize(
    "trap",
    [
        {"submit_before": 1},  # died sending the second job
        {"submit_after": 1},  # the service made it; the answer was lost
        {"results": 0},  # before anything was written
        {"results": 5},  # with some results written
        {"consume": 0},  # a job written, not yet marked consumed
    ],
)
def test_a_crash_anywhere_resumes_without_repeats(tmp_path, trap):
    _input(tmp_path)
    fake = FakeJobs(step=4, traps=dict(trap))
    with pytest.raises(Crash):
        _run(fake, tmp_path)
    assert load_state(state_path(tmp_path / "out.jsonl")) is not None
    result = _run(fake, tmp_path)
    assert result.resumed
    _assert_exactly_once(tmp_path, fake)
    assert len(fake.jobs) == 3  # the lost answer's job was found again
    assert result.totals.written == 25
    assert all(job.consumed for job in fake.jobs.values())


def test_a_crash_between_writing_and_committing(tmp_path, monkeypatch):
    _input(tmp_path)
    fake = FakeJobs(step=4)
    saves = {"n": 0}
    real_save = driver_module.save_state

    def dying_save(path, state):
        saves["n"] += 1
        if saves["n"] == 6:
            # The page is in the output, the state does not know it.
            raise Crash("save")
        real_save(path, state)

    monkeypatch.setattr(driver_module, "save_state", dying_save)
    with pytest.raises(Crash):
        _run(fake, tmp_path)
    written = len(_output(tmp_path))
    committed = load_state(state_path(tmp_path / "out.jsonl")).totals.written
    assert written > committed
    with (tmp_path / "out.jsonl").open("a") as file:
        file.write('{"id": "half a li')
    monkeypatch.setattr(driver_module, "save_state", real_save)
    _run(fake, tmp_path)
    _assert_exactly_once(tmp_path, fake)


def test_nothing_is_submitted_when_a_line_is_bad(tmp_path):
    _input(tmp_path, bad={3, 17})
    fake = FakeJobs()
    with pytest.raises(InvalidInput) as raised:
        _run(fake, tmp_path)
    assert [p.line for p in raised.value.problems] == [4, 18]
    assert "unknown or inactive model 'nope'" in str(raised.value)
    assert fake.submissions == 0
    assert not (tmp_path / "out.jsonl").exists()
    assert not state_path(tmp_path / "out.jsonl").exists()


def test_the_service_refusing_a_job_names_its_lines(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(
        refusal=ValidationFailed(
            "1 invalid item(s)",
            [{"field": "items[2].model", "message": "inactive model 'm'"}],
        )
    )
    with pytest.raises(InvalidInput) as raised:
        _run(fake, tmp_path)
    assert [str(p) for p in raised.value.problems] == [
        "line 3: model: inactive model 'm'"
    ]
    assert "refused their job" in str(raised.value)


def test_a_changed_input_or_another_target_is_refused(tmp_path):
    path = _input(tmp_path)
    fake = FakeJobs(traps={"results": 1})
    with pytest.raises(Crash):
        _run(fake, tmp_path)
    with pytest.raises(StateMismatch, match="jobs are on fake, not elsewhere"):
        _run(FakeJobs(target="elsewhere"), tmp_path)
    path.write_text(path.read_text().replace("q1", "Q1"))
    with pytest.raises(StateMismatch, match="not the input"):
        _run(fake, tmp_path)


def test_an_output_without_state_is_not_overwritten(tmp_path):
    _input(tmp_path)
    (tmp_path / "out.jsonl").write_text("precious\n")
    with pytest.raises(StateMismatch, match="new --output"):
        _run(FakeJobs(), tmp_path)
    assert (tmp_path / "out.jsonl").read_text() == "precious\n"


def test_cancel_then_run_writes_every_line(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(step=3, traps={"results": 2})
    with pytest.raises(Crash):
        _run(fake, tmp_path, BatchOptions(chunk_items=10, active_jobs=1))
    driver = BatchDriver(fake, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    report = asyncio.run(driver.cancel())
    assert report.jobs_canceled == 1 and report.items_unsubmitted == 15
    result = _run(fake, tmp_path)
    assert result.canceled
    lines = _assert_exactly_once(tmp_path, fake)
    canceled = [line for line in lines if line["error"]]
    assert {line["error"]["code"] for line in canceled} == {"canceled"}
    assert result.totals.canceled == len(canceled) > 15
    assert len(fake.calls) + len(canceled) == 25
    assert len(fake.jobs) == 1  # nothing more was submitted


def test_cancel_finds_a_job_whose_answer_was_lost(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(traps={"submit_after": 0})
    with pytest.raises(Crash):
        _run(fake, tmp_path)
    driver = BatchDriver(fake, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    report = asyncio.run(driver.cancel())
    assert report.jobs_canceled == 1
    assert fake.jobs["job0"].canceled


def test_a_quota_refusal_waits_and_submits_again(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(quota_refusals=2)
    _run(fake, tmp_path)
    _assert_exactly_once(tmp_path, fake)
    assert fake.submissions == 3 + 2 and len(fake.jobs) == 3


def test_the_services_job_limit_bounds_the_chunks(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(max_job_items=4)
    _run(fake, tmp_path)
    assert [len(job.items) for job in fake.jobs.values()] == [4] * 6 + [1]


def test_a_refusal_of_the_jobs_options_names_no_line(tmp_path):
    _input(tmp_path)
    fake = FakeJobs(
        refusal=ValidationFailed(
            "maxAttempts: at most 20",
            [{"field": "maxAttempts", "message": "at most 20"}],
        )
    )
    with pytest.raises(BatchError) as raised:
        _run(fake, tmp_path)
    assert not isinstance(raised.value, InvalidInput)
    assert "refused a job: maxAttempts: at most 20" in str(raised.value)
