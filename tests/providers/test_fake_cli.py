"""The fake provider's command line (``metasync fake-provider``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from providers.fake.__main__ import build_config, build_parser, main

ROOT = Path(__file__).parents[2]


def test_options_lay_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "fake.yaml"
    config.write_text(
        "seed: 3\n"
        "default: {latencyMs: 500, reply: from-file}\n"
        "models: {m: {faults: [{kind: auth}]}}\n"
    )
    args = build_parser().parse_args(
        [
            "--config",
            str(config),
            "--latency-ms",
            "10-20",
            "--stream-tps",
            "40",
            "--fault",
            "rate_limit:0.1",
        ]
    )
    document = build_config(args)
    assert document["seed"] == 3
    assert document["default"] == {
        "latencyMs": {"min": 10.0, "max": 20.0},
        "reply": "from-file",
        "streamTokensPerSecond": 40.0,
        "faults": [{"kind": "rate_limit", "rate": 0.1}],
    }
    assert document["models"] == {"m": {"faults": [{"kind": "auth"}]}}


def test_a_bad_config_file_exits_with_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fake.json"
    config.write_text(json.dumps({"default": {"latencyMs": -5}}))
    assert main(["--config", str(config)]) == 2
    assert "latencyMs" in capsys.readouterr().err


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault", "meteor"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_command_serves_until_stopped() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "providers.fake",
            "--port",
            str(port),
            "--reply",
            "cli works",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_fake/health") as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(
                {"model": "x", "messages": [{"role": "user", "content": "q"}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as reply:
            body = json.load(reply)
        assert body["choices"][0]["message"]["content"] == "cli works"
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert f"serving on http://127.0.0.1:{port}" in out
