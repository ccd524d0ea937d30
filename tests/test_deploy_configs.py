"""The deployment files are valid for the tools that read them."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from pipeline.catalog import load_seed
from serve_app.deployment import INGRESS_NAME, build_app

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


def _deployed_options(config):
    """Options of each deployment as Serve deploys ``config``.

    Builds the application as the controller does, then applies the
    config's ``deployments:`` section with Serve's own override step.
    """
    from ray.serve._private.application_state import (
        override_deployment_info,
    )
    from ray.serve._private.build_app import build_app as serve_build_app
    from ray.serve._private.deployment_info import DeploymentInfo

    (app,) = ServeDeploySchema.model_validate(config).applications
    assert app.import_path == "serve_app.deployment:build_app"
    built = serve_build_app(build_app(app.args), name=app.name)
    infos = {
        d.name: DeploymentInfo(
            deployment_config=d._deployment_config,
            replica_config=d._replica_config,
            start_time_ms=0,
            deployer_job_id="test",
        )
        for d in built.deployments
    }
    return override_deployment_info(infos, app)


def _serve_yaml():
    return yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())


def test_serve_yaml_is_a_valid_serve_config_for_our_builder():
    options = _deployed_options(_serve_yaml())
    ingress = options[INGRESS_NAME]
    assert ingress.deployment_config.num_replicas == 1
    assert ingress.deployment_config.max_ongoing_requests == 256
    # I/O-bound: the API replicas take no CPU slot.
    assert ingress.replica_config.ray_actor_options["num_cpus"] == 0


def test_serve_yaml_deployments_section_sets_replicas_and_concurrency():
    config = _serve_yaml()
    (section,) = config["applications"][0]["deployments"]
    assert section["name"] == INGRESS_NAME
    section.update(num_replicas=3, max_ongoing_requests=17)
    ingress = _deployed_options(config)[INGRESS_NAME]
    assert ingress.deployment_config.num_replicas == 3
    assert ingress.deployment_config.max_ongoing_requests == 17


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
