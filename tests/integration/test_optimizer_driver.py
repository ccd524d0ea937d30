"""The Python driver API and ``metasync optimize`` on the session cluster.

The driver process runs the search loop itself (a Python scorer is
allowed there); evaluations still run as Ray tasks through the workers.
"""

import json

import pytest
import yaml

import optimizer
from providers.fake.simulation import STARTING_PROMPT, task_dataset
from serve_app.cli import main
from tests.support.api import create_model
from tests.support.fake_provider import unique_model

pytestmark = pytest.mark.ray


@pytest.fixture
def sim_models(http, admin_headers, fake, base_url):
    target, meta = unique_model("task"), unique_model("meta")
    for name, kind in ((target, "task"), (meta, "meta")):
        create_model(http, admin_headers, fake.url, name, max_concurrency=16)
        fake.configure({name: {"simulate": kind, "latencyMs": 5}})
    return target, meta


def test_driver_api_with_a_python_scorer(sim_models):
    target, meta = sim_models
    seen = []

    def scorer(example, output):
        seen.append(example.id)
        return output.strip() == example.expected

    reports = []
    run = optimizer.optimize(
        prompts=[STARTING_PROMPT],
        examples=task_dataset(30, seed=5),
        config={
            "targetModel": target,
            "metaModel": meta,
            "minibatchSize": 5,
            "budget": {"iterations": 3, "candidatesPerIteration": 2},
        },
        scorer=scorer,
        on_progress=reports.append,
    )
    assert run["status"] == "SUCCEEDED", run.get("error")
    assert run["config"]["scorer"]["kind"] == "python"
    assert run["result"]["bestScore"] > run["result"]["baselineScore"]
    assert reports and reports[-1]["status"] == "SUCCEEDED"
    assert reports[-1]["iteration"] == 3
    # The scorer ran in the evaluation tasks' processes, not here.
    assert seen == []

    # Resuming a finished run changes nothing and calls nothing.
    again = optimizer.optimize(resume=str(run["_id"]))
    assert again["state"] == run["state"]


def test_optimize_command(sim_models, tmp_path, capsys):
    target, meta = sim_models
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in task_dataset(30, seed=6)))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "cli run",
                "prompts": [STARTING_PROMPT],
                "datasetFile": "data.jsonl",
                "targetModel": target,
                "metaModel": meta,
                "scorer": {"kind": "exact"},
                "minibatchSize": 5,
                "budget": {"iterations": 3, "candidatesPerIteration": 2},
            }
        )
    )
    report = tmp_path / "report.html"
    status = main(["optimize", str(config), "--report", str(report)])
    out = capsys.readouterr()
    assert status == 0, out
    assert "SUCCEEDED" in out.out
    assert "best prompt" in out.out
    assert "iter" in out.err  # the progress bar
    assert "<svg" in report.read_text()


def test_optimize_command_names_a_bad_field(sim_models, tmp_path, capsys):
    target, _ = sim_models
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "prompts": [STARTING_PROMPT],
                "examples": task_dataset(10),
                "targetModel": target,
                "metaModel": "no-such-meta-model",
            }
        )
    )
    assert main(["optimize", str(config)]) == 2
    # Errors go to stderr, one line each (the CLI convention).
    assert "metaModel" in capsys.readouterr().err
