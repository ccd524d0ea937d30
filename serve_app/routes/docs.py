"""API docs behind HTTP basic auth, rendered from local assets.

Swagger UI and ReDoc load their scripts from ``/docs-assets`` (files
shipped by the ``fastapi-offline`` package), so the docs work with no
internet. The assets are generic and public; the API description
(``/openapi.json``) and the pages need ``DOCS_USER``/``DOCS_SECRET``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from serve_app.deps import DocsUser

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs-assets"

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request, user: DocsUser) -> JSONResponse:
    """The OpenAPI description."""
    return JSONResponse(request.app.openapi())


def _openapi_url(request: Request) -> str:
    """Where the page fetches the API description from.

    Scheme-relative with the host: a page opened as
    ``http://user:secret@host/docs`` would otherwise resolve a relative
    URL with the credentials in it, which browsers refuse to fetch; the
    browser still sends the credentials it was given for the host.
    """
    host = request.headers.get("host", request.url.netloc)
    return f"//{host}/openapi.json"


@router.get("/docs")
async def swagger_ui(request: Request, user: DocsUser) -> HTMLResponse:
    """Swagger UI."""
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} — API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
    )


@router.get("/redoc")
async def redoc(request: Request, user: DocsUser) -> HTMLResponse:
    """ReDoc."""
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} — API reference",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


def mount_docs(app: FastAPI) -> None:
    """Add the docs routes and their local assets to ``app``.

    Also makes ``app.openapi()`` leave out FastAPI's default 422
    responses: invalid input is a 400 in the shared error shape (routes
    declare it), so a 422 entry would describe a response never sent.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = generate()  # cached by FastAPI; changed in place
            _drop_validation_422(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(router)
    app.mount(
        ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets"
    )


def _drop_validation_422(schema: dict[str, Any]) -> None:
    """Remove the 422 responses and the schemas only they use."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
