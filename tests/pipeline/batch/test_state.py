"""The state file: round trip, atomic replacement, the lock."""

from datetime import timedelta

import pytest

from pipeline.batch.backend import ResultItem
from pipeline.batch.chunks import Chunk
from pipeline.batch.errors import BatchError
from pipeline.batch.state import (
    BatchState,
    Totals,
    load_state,
    output_lock,
    save_state,
    state_path,
)
from pipeline.jobs.shapes import JobOptions


def _state():
    chunks = [
        Chunk(0, 1, 2, 0, 20, "k-0", job_id="j0", written=2),
        Chunk(1, 3, 1, 20, 30, "k-1"),
    ]
    totals = Totals()
    totals.add(
        ResultItem("i", "c", "m", "PROCESSED", input_tokens=3, output_tokens=4)
    )
    totals.add(ResultItem("j", "d", "m", "FAILED"))
    return BatchState(
        input_sha256="ab" * 32,
        input_bytes=30,
        items=3,
        target="http://x",
        options=JobOptions(
            priority=2,
            max_attempts=5,
            cache=True,
            mode="auto",
            deadline=timedelta(hours=30),
        ),
        chunks=chunks,
        output_bytes=123,
        totals=totals,
    )


def test_state_round_trips(tmp_path):
    path = state_path(tmp_path / "out.jsonl")
    assert path.name == "out.jsonl.state.json"
    assert load_state(path) is None
    state = _state()
    save_state(path, state)
    loaded = load_state(path)
    assert loaded == state
    assert not loaded.complete
    assert loaded.totals.failed == 1 and loaded.totals.input_tokens == 3
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_foreign_or_damaged_state_is_refused(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"version": 99}')
    with pytest.raises(BatchError, match="not a batch state"):
        load_state(path)
    path.write_text('{"version": 1, "items": 3}')
    with pytest.raises(BatchError, match="damaged"):
        load_state(path)
    path.write_text("{")
    with pytest.raises(BatchError, match="unreadable"):
        load_state(path)


def test_one_process_drives_an_output_at_a_time(tmp_path):
    import subprocess
    import sys

    output = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from pipeline.batch.state import output_lock;"
            "cm = output_lock(Path(sys.argv[1])); cm.__enter__();"
            "print('held', flush=True); time.sleep(30)",
            str(output),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(BatchError, match="another metasync batch"),
            output_lock(output),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(output):
        pass
