"""``metasync optimize CONFIG.yaml``: a run driven from the terminal.

The config file holds a run's fields as the API takes them (camelCase)
plus where its data comes from::

    name: calculator
    prompts: ["You are a calculator. Answer the user's question."]
    datasetFile: optimize-demo.jsonl   # JSON lines; or examples: [...]
    targetModel: demo-task
    metaModel: demo-meta
    scorer: {kind: exact}
    budget: {iterations: 6, candidatesPerIteration: 4, maxCalls: 2000}

Paths are relative to the config file. Progress (iteration, best score,
calls and cost against the budget) is shown live; ``--report`` writes
the run's HTML report; ``--resume RUN_ID`` continues a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from optimizer.driver import optimize
from optimizer.records import Candidate
from optimizer.report import render_html
from pipeline.errors import MetasyncError, ValidationFailed
from serve_app.preflight import one_line

_DATA_FIELDS = ("prompts", "workingPrompts", "datasetFile", "examples")


def add_parser(commands: Any) -> None:
    """Register the ``optimize`` command."""
    command = commands.add_parser(
        "optimize", help="optimize a prompt (config file: see --help)"
    )
    command.add_argument("config", type=Path, help="the run's YAML file")
    command.add_argument("--report", type=Path, help="write the HTML here")
    command.add_argument("--resume", help="continue this run id")


def load_config(path: Path) -> dict[str, Any]:
    """Read a run file: prompts, examples and the run's configuration.

    Raises:
        ValueError: The file or its data file is malformed.
    """
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping")
    prompts = raw.get("workingPrompts", raw.get("prompts"))
    if not prompts:
        raise ValueError(f"{path}: prompts: give at least one prompt")
    texts = [p if isinstance(p, str) else p["text"] for p in prompts]
    examples = raw.get("examples")
    if "datasetFile" in raw:
        data = path.parent / raw["datasetFile"]
        examples = []
        for number, line in enumerate(data.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                examples.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{data}:{number}: {error}") from None
    if not examples:
        raise ValueError(f"{path}: give examples or datasetFile")
    config = {k: v for k, v in raw.items() if k not in _DATA_FIELDS}
    name = config.pop("name", path.stem)
    return {
        "name": name,
        "prompts": texts,
        "examples": examples,
        "config": config,
    }


class ProgressBar:
    """Iterations as a bar; best score, calls and cost beside it."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def __call__(self, progress: dict[str, Any]) -> None:
        """Show one progress report."""
        if self._bar is None:
            self._bar = tqdm(
                total=progress["iterations"], unit="iter", dynamic_ncols=True
            )
        self._bar.n = progress["iteration"]
        self._bar.set_postfix_str(_postfix(progress), refresh=True)

    def close(self) -> None:
        """End the bar."""
        if self._bar is not None:
            self._bar.close()


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _postfix(progress: dict[str, Any]) -> str:
    calls = f"{progress['calls']}"
    if progress.get("maxCalls"):
        calls += f"/{progress['maxCalls']}"
    cost = f"${progress['cost']:.4f}"
    if progress.get("maxCost"):
        cost += f"/${progress['maxCost']}"
    return (
        f"best {_score(progress.get('bestScore'))} "
        f"(baseline {_score(progress.get('baselineScore'))}) "
        f"calls {calls} cost {cost}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    try:
        spec = load_config(args.config) if args.resume is None else None
    except (OSError, ValueError, yaml.YAMLError) as error:
        return _fail(f"{args.config}: {one_line(error)}", 2)
    bar = ProgressBar()
    try:
        if spec is None:
            run_doc = optimize(resume=args.resume, on_progress=bar)
        else:
            run_doc = optimize(**spec, on_progress=bar)
    except ValidationFailed as error:
        bar.close()
        for problem in error.errors:
            _fail(f"{problem['field']}: {problem['message']}", 2)
        return 2
    except (MetasyncError, RuntimeError) as error:
        bar.close()
        return _fail(one_line(error), 1)
    except KeyboardInterrupt:
        bar.close()
        return _fail("interrupted; resume with --resume RUN_ID", 130)
    bar.close()
    _print_result(run_doc)
    if args.report is not None:
        _write_report(run_doc, args.report)
    return 0 if run_doc["status"] == "SUCCEEDED" else 1


def _fail(message: str, status: int) -> int:
    print(f"metasync: {one_line(message)}", file=sys.stderr)
    return status


def _print_result(run_doc: dict[str, Any]) -> None:
    result = run_doc.get("result") or {}
    print(f"run {run_doc['_id']}: {run_doc['status']}")
    if run_doc.get("error"):
        print(f"error: {run_doc['error']}")
    if result:
        print(result["message"])
        print(f"best prompt ({result['bestId']}):\n{result['bestPrompt']}")


def _write_report(run_doc: dict[str, Any], path: Path) -> None:
    state = run_doc.get("state") or {}
    candidates = [Candidate.from_doc(c) for c in state.get("candidates", [])]
    page = render_html(
        run_doc.get("name") or f"Run {run_doc['_id']}",
        run_doc.get("result") or {},
        candidates,
        state.get("history") or [],
        run_doc.get("progress") or {},
    )
    path.write_text(page)
    print(f"report: {path}")
