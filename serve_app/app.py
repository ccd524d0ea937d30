"""The FastAPI application: routes, middleware, error handlers, lifespan.

:func:`create_app` builds the app for one process; its lifespan opens the
process's collaborators (:class:`AppContext`) from the settings. The same
app runs under Ray Serve (see :mod:`serve_app.deployment`) or any ASGI
server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pipeline.logging import configure_logging, get_logger, redactor
from pipeline.settings import Settings
from serve_app.context import AppContext
from serve_app.errors import install_error_handlers
from serve_app.middleware import (
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
)
from serve_app.routes import (
    admin_clients,
    admin_jobs,
    catalog,
    chat,
    datasets,
    docs,
    health,
    jobs,
    prompts,
    runs,
)
from serve_app.version import product_version

log = get_logger(__name__)

DESCRIPTION = """
Asynchronous LLM processing: submit jobs of prompts, poll their progress,
page their results. Clients authenticate with `X-Client-Id` +
`X-Client-Key` or `Authorization: Bearer <key>`; admins with
`X-Admin-Key`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the HTTP app.

    Args:
        settings: The settings; read from the environment when omitted
            (each Serve replica reads its own).

    Returns:
        The app; collaborators are opened in its lifespan.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    # Generated development secrets are in no environment variable.
    for secret in settings.secret_values():
        redactor.register(secret)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import ray

        context = await AppContext.open(
            settings, supervise=ray.is_initialized()
        )
        app.state.context = context
        log.info("app_started", environment=settings.environment)
        try:
            yield
        finally:
            await context.close()

    app = FastAPI(
        title="Metasync",
        version=product_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    for module in (
        health,
        admin_clients,
        catalog,
        prompts,
        jobs,
        admin_jobs,
        chat,
        datasets,
        runs,
    ):
        app.include_router(module.router)
    docs.mount_docs(app)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes
    )
    app.add_middleware(RequestContextMiddleware)
    return app
