"""CLI conventions: every option has help, `-h` lists every command, and
errors are one line naming the cause on stderr, never a traceback."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_app.test_cli import _clean_env


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _all_parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    from providers.fake.__main__ import build_parser
    from serve_app.cli import _parser

    yield from _parsers(_parser(), "metasync")
    yield from _parsers(build_parser(), "metasync fake-provider")


def test_every_option_and_command_has_help() -> None:
    missing = []
    for path, parser in _all_parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [
                    f"{path} {choice.dest}"
                    for choice in action._choices_actions
                    if not choice.help
                ]
            elif not action.help or action.help == argparse.SUPPRESS:
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"{path} {name}")
    assert not missing, f"without help: {missing}"


def _cli(*args: str, env: dict[str, str], timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "serve_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = _cli("-h", env=_clean_env(METASYNC_HOME=str(tmp_path)))
    assert result.returncode == 0
    for command in ("up", "admin", "optimize", "batch", "fake-provider"):
        assert f"    {command}" in result.stdout, result.stdout


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [("admin", "create-client", "x"), ("up", "--no-dashboard")],
    ids=["admin", "up"],
)
def test_unreachable_database_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    port = _closed_port()
    env = _clean_env(
        METASYNC_HOME=str(tmp_path),
        DB_CONNECTION_STRING=f"mongodb://user:secret@127.0.0.1:{port}/",
    )
    args = [*command]
    if command[0] == "up":
        args += ["--port", str(_closed_port())]
    line = _one_line_error(_cli(*args, env=env))
    assert "secret" not in line
    assert "database" in line and f"127.0.0.1:{port}" in line, line


def test_malformed_database_uri_is_one_line(tmp_path: Path) -> None:
    env = _clean_env(
        METASYNC_HOME=str(tmp_path), DB_CONNECTION_STRING="not-a-uri"
    )
    line = _one_line_error(_cli("admin", "create-client", "x", env=env))
    assert "DB_CONNECTION_STRING" in line, line


def test_unknown_setting_value_is_one_line(tmp_path: Path) -> None:
    env = _clean_env(METASYNC_HOME=str(tmp_path), POLL_INTERVAL="often")
    line = _one_line_error(_cli("up", env=env))
    assert "POLL_INTERVAL" in line, line


@pytest.mark.parametrize(
    "content",
    ["models: [unclosed\n", "models:\n  - name: x\n    provider: nope\n"],
    ids=["invalid-yaml", "invalid-model"],
)
def test_bad_models_file_is_one_line(tmp_path: Path, content: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(content)
    env = _clean_env(METASYNC_HOME=str(tmp_path), MODELS_FILE=str(models))
    line = _one_line_error(_cli("up", "--port", str(_closed_port()), env=env))
    assert str(models) in line, line


def test_bad_optimizer_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("dataset: [unclosed\n")
    env = _clean_env(METASYNC_HOME=str(tmp_path))
    line = _one_line_error(_cli("optimize", str(config), env=env))
    assert str(config) in line, line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _clean_env(METASYNC_HOME=str(tmp_path))
        line = _one_line_error(_cli("up", "--port", str(port), env=env))
    assert str(port) in line and "in use" in line, line
