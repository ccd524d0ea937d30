"""The Ray Serve deployment: the FastAPI app behind Serve's HTTP proxy.

This is the only module that touches ``serve.deployment``. The replica
builds its app at start-up from its own environment (secrets never go
through ``.bind()``); :func:`build_app` is the application builder named
in ``configs/serve.yaml`` (``serve_app.deployment:build_app``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp

from pipeline.settings import Settings
from serve_app.app import create_app

APP_NAME = "metasync"


class IngressOptions(BaseModel):
    """Non-secret options of the ingress deployment (``serve.yaml`` args).

    Attributes:
        num_replicas: HTTP replicas (the API is I/O-bound; one is plenty
            on one machine).
        max_ongoing_requests: Concurrent requests per replica.
    """

    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(256, ge=1)


# Serve's own access log is off: the app writes a structured line per
# request (with its request id) instead.
@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
@serve.ingress()
class MetasyncIngress:
    """One HTTP replica; its app is built in the replica's own process."""

    def __init__(self, options: IngressOptions) -> None:
        self._options = options

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return create_app(Settings.from_env(generate_dev_secrets=False))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (``serve run serve_app.deployment:build_app``).

    Args:
        args: :class:`IngressOptions` fields, from ``serve.yaml``.

    Returns:
        The bound application.
    """
    options = IngressOptions.model_validate(args or {})
    deployment: Any = MetasyncIngress
    return deployment.options(
        num_replicas=options.num_replicas,
        max_ongoing_requests=options.max_ongoing_requests,
    ).bind(options)
