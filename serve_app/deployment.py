"""The Ray Serve deployment: the FastAPI app behind Serve's HTTP proxy.

This is the only module that touches ``serve.deployment``. The ingress
is built the documented way: ``@serve.ingress`` with a builder function
that Serve calls on each replica, so the app is built at replica start
from the replica's own environment (secrets never go through
``.bind()`` nor through a pickled app). :func:`build_app` is the
application builder named in ``configs/serve.yaml``
(``serve_app.deployment:build_app``); the replica count and
``max_ongoing_requests`` come from that file's ``deployments:``
section, so they change with ``serve deploy``, without a rebuild.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from pipeline.settings import Settings
from serve_app.app import create_app

APP_NAME = "metasync"
#: The deployment's name (``deployments[].name`` in ``serve.yaml``).
INGRESS_NAME = "MetasyncIngress"


def build_asgi_app() -> FastAPI:
    """The HTTP app of one replica, from its own environment."""
    return create_app(Settings.from_env(generate_dev_secrets=False))


# Defaults; `serve.yaml`'s `deployments:` section overrides them. The
# API is I/O-bound: its replicas take no CPU slot (with one each, two
# replicas would starve a 2-CPU machine). Serve's own access log is off:
# the app writes a structured line per request (with its request id).
@serve.deployment(
    name=INGRESS_NAME,
    num_replicas=1,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
@serve.ingress(build_asgi_app)
class MetasyncIngress:
    """One HTTP replica; its app is built in the replica's own process."""


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (``serve run serve_app.deployment:build_app``).

    Args:
        args: The application's ``args`` from ``serve.yaml``; none are
            read (settings come from each replica's environment).

    Returns:
        The bound application.
    """
    # The decorators return a Deployment; mypy still sees the class.
    deployment: Any = MetasyncIngress
    application: Application = deployment.bind()
    return application
