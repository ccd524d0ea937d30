"""``metasync batch run`` against the session's service, over HTTP and direct.

The command is killed part-way (SIGINT in a subprocess, or an
interruption raised through the Python API) and run again; every
custom id must be in the output once, and the fake provider must have
received every request once.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from pipeline.batch import BatchOptions, run_batch
from serve_app.cli import main
from tests.support.api import create_model
from tests.support.fake_provider import unique_model
from tests.support.net import wait_until

pytestmark = pytest.mark.ray


def _model(http, admin_headers, fake, latency_ms=20):
    name = unique_model("batch")
    create_model(http, admin_headers, fake.url, name, max_concurrency=2)
    fake.configure({name: {"latencyMs": latency_ms}})
    return name


def _input(path, model, n, bad_model_lines=()):
    lines = []
    for i in range(n):
        used = "no-such-model" if i + 1 in bad_model_lines else model
        if i % 2:
            lines.append(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": used,
                        "messages": [
                            {"role": "system", "content": "Echo."},
                            {"role": "user", "content": f"question {i}"},
                        ],
                        "temperature": 0,
                    },
                }
            )
        else:
            lines.append(
                {"customId": f"r{i}", "model": used, "userContent": f"q {i}"}
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _lines(path):
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x]


def _command(*args):
    return [sys.executable, "-m", "serve_app.cli", "batch", "run", *args]


def _interrupted_run(args, env, output, after_lines):
    """Start the command, SIGINT it once some results are written."""
    process = subprocess.Popen(
        _command(*args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: (
                len(output.read_bytes().splitlines()) >= after_lines
                if output.exists()
                else process.poll() is not None
            ),
            timeout_s=90,
            what="some results",
        )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


def _assert_each_once(output, n):
    lines = _lines(output)
    ids = sorted(line["custom_id"] for line in lines)
    assert ids == sorted(f"r{i}" for i in range(n))
    return lines


def test_http_batch_is_interrupted_and_resumed(
    http, admin_headers, fake, client_a, base_url, tmp_path
):
    model = _model(http, admin_headers, fake)
    n = 240
    source = _input(tmp_path / "in.jsonl", model, n)
    output = tmp_path / "out.jsonl"
    env = {**os.environ, "METASYNC_API_KEY": client_a.api_key}
    args = [str(source), "--output", str(output), "--url", base_url]
    args_run = [*args, "--chunk-items", "50"]
    status, err = _interrupted_run(args_run, env, output, after_lines=20)
    assert status == 130, err
    assert (
        f"resume with: metasync batch run {source} --output {output} "
        f"--url {base_url}" in err
    )
    assert "Traceback" not in err
    assert 20 <= len(_lines(output)) < n

    done = subprocess.run(
        _command(*args), env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert f"{n} result(s) in {output} (0 failed" in done.stdout
    lines = _assert_each_once(output, n)
    assert all(line["error"] is None for line in lines)
    first = next(line for line in lines if line["custom_id"] == "r1")
    body = first["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "question 1"
    assert body["usage"]["total_tokens"] > 0
    assert fake.stats(model)["requests"] == n
    # One job per chunk, none twice, each consumed once written.
    jobs = http.get("/jobs", headers=client_a.headers).json()["items"]
    assert len(jobs) == 5
    assert {job["status"] for job in jobs} == {"CONSUMED"}


def test_mode_batch_sends_every_job_through_provider_batches(
    http,
    admin_headers,
    fake,
    client_a,
    base_url,
    tmp_path,
    capsys,
    monkeypatch,
):
    model = _model(http, admin_headers, fake)
    fake.configure({model: {"batch": {"durationMs": 200}}})
    n = 30
    source = _input(tmp_path / "in.jsonl", model, n)
    output = tmp_path / "out.jsonl"
    monkeypatch.setenv("METASYNC_API_KEY", client_a.api_key)
    args = ["batch", "run", str(source), "-o", str(output), "--url", base_url]
    status = main([*args, "--mode", "batch", "--chunk-items", "10"])
    assert status == 0, capsys.readouterr().err
    lines = _assert_each_once(output, n)
    assert all(line["error"] is None for line in lines)
    jobs = http.get("/jobs", headers=client_a.headers).json()["items"]
    assert len(jobs) == 3
    assert {job["mode"] for job in jobs} == {"batch"}
    # Answered by provider batches: no live call reached the provider.
    assert fake.stats(model)["requests"] == 0


def test_items_of_a_down_model_fall_back_unless_the_run_forbids_it(
    http,
    admin_headers,
    fake,
    client_a,
    base_url,
    tmp_path,
    capsys,
    monkeypatch,
):
    backup = _model(http, admin_headers, fake)
    down = unique_model("batch")
    create_model(http, admin_headers, fake.url, down, fallbacks=[backup])
    fake.configure({down: {"faults": [{"kind": "server_error"}]}})
    monkeypatch.setenv("METASYNC_API_KEY", client_a.api_key)
    n = 8
    source = _input(tmp_path / "in.jsonl", down, n)
    args = ["batch", "run", str(source), "--url", base_url]
    args += ["--max-attempts", "1"]

    allowed = tmp_path / "allowed.jsonl"
    assert main([*args, "-o", str(allowed)]) == 0, capsys.readouterr().err
    lines = _assert_each_once(allowed, n)
    assert all(line["error"] is None for line in lines)
    assert fake.stats(backup)["requests"] == n

    # Other input: the same one would be the same jobs (idempotency key),
    # and the service refuses them with other options.
    source = _input(tmp_path / "in2.jsonl", down, n - 2)
    args[2] = str(source)
    forbidden = tmp_path / "forbidden.jsonl"
    main([*args, "-o", str(forbidden), "--no-fallbacks"])
    lines = _assert_each_once(forbidden, n - 2)
    assert all(line["error"] is not None for line in lines)
    assert fake.stats(backup)["requests"] == n  # none moved this time
    jobs = http.get("/jobs", headers=client_a.headers).json()["items"]
    assert sorted(job["fallbacks"] for job in jobs) == [False, True]


def test_a_bad_mode_or_deadline_is_refused_before_anything_runs(
    tmp_path, capsys
):
    source = tmp_path / "in.jsonl"
    source.write_text("")
    args = ["batch", "run", str(source), "-o", str(tmp_path / "out.jsonl")]
    assert main([*args, "--mode", "batch", "--deadline", "2h"]) == 2
    assert "--deadline: a batch job may take" in capsys.readouterr().err
    assert main([*args, "--deadline", "soon"]) == 2
    assert "--deadline: a positive whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--mode", "later"])
    assert "invalid choice: 'later'" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_lines_are_reported_and_nothing_is_submitted(
    http,
    admin_headers,
    fake,
    client_a,
    base_url,
    tmp_path,
    capsys,
    monkeypatch,
):
    model = _model(http, admin_headers, fake)
    source = _input(tmp_path / "in.jsonl", model, 30, bad_model_lines={4, 9})
    with source.open("a") as file:
        file.write("{broken\n")
    monkeypatch.setenv("METASYNC_API_KEY", client_a.api_key)
    output = tmp_path / "out.jsonl"
    status = main(
        ["batch", "run", str(source), "-o", str(output), "--url", base_url]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert (
        f"{source}:4: model: unknown or inactive model 'no-such-model'" in err
    )
    assert f"{source}:9: body.model" not in err  # named once, as model
    assert f"{source}:9: model:" in err
    assert f"{source}:31: not JSON" in err
    assert "3 bad line(s); nothing was submitted" in err
    assert http.get("/jobs", headers=client_a.headers).json()["items"] == []
    assert fake.stats(model)["requests"] == 0
    assert not output.exists()


def test_cancel_then_run_accounts_for_every_line(
    http,
    admin_headers,
    fake,
    client_a,
    base_url,
    tmp_path,
    capsys,
    monkeypatch,
):
    model = _model(http, admin_headers, fake, latency_ms=100)
    n = 150
    source = _input(tmp_path / "in.jsonl", model, n)
    output = tmp_path / "out.jsonl"
    env = {**os.environ, "METASYNC_API_KEY": client_a.api_key}
    args = [str(source), "--output", str(output), "--url", base_url]
    status, err = _interrupted_run(
        [*args, "--chunk-items", "50"], env, output, after_lines=4
    )
    assert status == 130, err
    monkeypatch.setenv("METASYNC_API_KEY", client_a.api_key)
    assert main(["batch", "run", *args, "--cancel"]) == 0
    assert "canceled 3 job(s)" in capsys.readouterr().out
    assert main(["batch", "run", *args]) == 0
    lines = _assert_each_once(output, n)
    canceled = [x for x in lines if x["error"]]
    assert canceled and {x["error"]["code"] for x in canceled} == {"canceled"}
    # What ran was sent once; what was canceled never was.
    assert fake.stats(model)["requests"] == n - len(canceled)


def test_direct_batch_through_the_python_api(
    http, admin_headers, fake, client_a, base_url, tmp_path, monkeypatch
):
    model = _model(http, admin_headers, fake)
    n = 120
    source = _input(tmp_path / "in.jsonl", model, n)
    output = tmp_path / "out.jsonl"
    monkeypatch.setenv("METASYNC_API_KEY", client_a.api_key)
    monkeypatch.delenv("METASYNC_URL", raising=False)

    def stop_part_way(progress):
        if progress.phase == "running" and progress.done >= 30:
            raise KeyboardInterrupt

    options = BatchOptions(chunk_items=40, poll_interval_s=0.2)
    with pytest.raises(KeyboardInterrupt):
        run_batch(source, output, options=options, on_progress=stop_part_way)
    assert 30 <= len(_lines(output)) < n
    result = run_batch(source, output)
    assert result.resumed and result.totals.written == n
    assert result.totals.failed == 0 and result.totals.cost > 0
    _assert_each_once(output, n)
    assert fake.stats(model)["requests"] == n
    jobs = http.get("/jobs", headers=client_a.headers).json()["items"]
    assert len(jobs) == 3
