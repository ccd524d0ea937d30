"""The deployment files are valid for the tools that read them."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from pipeline.catalog import load_seed
from serve_app.deployment import IngressOptions, build_app

ROOT = Path(__file__).resolve().parent.parent


def test_ray_cluster_yaml_matches_the_launcher_schema():
    schema = json.loads(
        (
            Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
        ).read_text()
    )
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    commands = " ".join(config["head_start_ray_commands"])
    for setting in (
        "RAY_USAGE_STATS_ENABLED=0",
        "serve deploy configs/serve.yaml",
    ):
        assert setting in commands


def test_serve_yaml_is_a_valid_serve_config_for_our_builder():
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "serve_app.deployment:build_app"
    IngressOptions.model_validate(app.args)
    assert build_app(app.args) is not None


def test_models_yaml_seed_is_valid_and_simulated_models_need_no_keys():
    specs = load_seed(ROOT / "configs" / "models.yaml")
    assert {s.provider for s in specs} == {
        "openai",
        "azure_openai",
        "azure_inference",
        "anthropic",
        "gemini",
    }
    for spec in specs:
        assert spec.simulated and spec.description.startswith("SIMULATED")
        assert spec.config["auth"] == "none"


#: Variables that hold secrets: they may only come from a secret file.
SECRET_NAMES = (
    "RAY_AUTH_TOKEN",
    "DB_CONNECTION_STRING",
    "ADMIN_API_KEY",
    "API_KEY_PEPPER",
    "DOCS_SECRET",
)


def _start_commands(config: dict) -> dict[str, str]:
    return {
        role: " ".join(config[f"{role}_start_ray_commands"])
        for role in ("head", "worker")
    }


def test_ray_cluster_requires_token_auth_from_a_secret_file():
    text = (ROOT / "ray_cluster.yaml").read_text()
    config = yaml.safe_load(text)
    for role, commands in _start_commands(config).items():
        settings = dict(
            word.split("=", 1)
            for word in commands.split()
            if "=" in word and word.split("=", 1)[0].isupper()
        )
        assert settings.get("RAY_AUTH_MODE") == "token", role
        token_path = settings.get("RAY_AUTH_TOKEN_PATH", "")
        assert token_path.startswith("/etc/"), (role, token_path)
        # The secrets come from the node's secret file, sourced first.
        assert ". /etc/metasync.env" in commands, role
    head = _start_commands(config)["head"]
    assert "--dashboard-host=127.0.0.1" in head
    for name in SECRET_NAMES:
        assert f"{name}=" not in text, f"{name} is set inline"
    assert "_KEY=" not in text, "a provider key is set inline"
