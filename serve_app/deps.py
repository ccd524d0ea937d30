"""Request dependencies: the app context, authentication and quotas.

Routes declare what they need with the ``Annotated`` aliases below
(``Context``, ``AdminKey``, ``CurrentClient``) and stay a few lines.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from pipeline.clients import Client
from pipeline.errors import Unauthorized
from pipeline.logging import bind_context, redactor
from pipeline.security import admin_key_matches
from serve_app.context import AppContext


def get_context(request: Request) -> AppContext:
    """The replica's collaborators, built in the app's lifespan."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]

# Each scheme has its own name: FastAPI names every APIKeyHeader
# "APIKeyHeader", and the OpenAPI description kept only the last of them.
_admin_header = APIKeyHeader(
    name="X-Admin-Key",
    scheme_name="AdminKey",
    description="The admin key (ADMIN_API_KEY).",
    auto_error=False,
)
_client_key_header = APIKeyHeader(
    name="X-Client-Key",
    scheme_name="ClientKey",
    description=(
        "A client's key (it names its client by its prefix). X-Client-Id "
        "may come with it and must then be the key's client."
    ),
    auto_error=False,
)
_bearer = HTTPBearer(
    scheme_name="ClientBearer",
    description="A client's key as `Authorization: Bearer <key>`.",
    auto_error=False,
)
_basic = HTTPBasic(auto_error=False, realm="metasync docs")

# Not a security scheme of its own: the id alone authenticates nothing,
# and OpenAPI would list it as an alternative that suffices.
ClientIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Client-Id",
        description="The client's id; optional with X-Client-Key.",
    ),
]


def _check_admin(context: AppContext, key: str | None) -> bool:
    # Nothing a caller presents is registered for redaction before it
    # authenticates (the admin key is a known secret of the process).
    expected = context.settings.admin_api_key.get_secret_value()
    return admin_key_matches(key, expected)


async def require_admin(
    context: Context,
    key: Annotated[str | None, Security(_admin_header)] = None,
) -> str:
    """Admin auth: ``X-Admin-Key``, compared in constant time.

    Raises:
        Unauthorized: Missing or wrong key.
    """
    if not _check_admin(context, key):
        raise Unauthorized("a valid X-Admin-Key header is required")
    bind_context(actor="admin")
    return "admin"


async def optional_admin(
    context: Context,
    key: Annotated[str | None, Security(_admin_header)] = None,
) -> str | None:
    """Admin auth that yields None instead of failing."""
    return "admin" if _check_admin(context, key) else None


async def _authenticate_client(
    context: AppContext,
    client_id: str | None,
    client_key: str | None,
    bearer: HTTPAuthorizationCredentials | None,
) -> Client | None:
    key = client_key if client_key is not None else None
    if key is None and bearer is not None:
        key = bearer.credentials
    if key is None:
        return None
    client = await context.clients.authenticate(key, client_id)
    # Only a key that authenticated is redacted as a value: a failed
    # attempt must not make words of the caller's choosing vanish.
    redactor.remember_authenticated(key)
    return client


async def require_client(
    context: Context,
    client_id: ClientIdHeader = None,
    client_key: Annotated[str | None, Security(_client_key_header)] = None,
    bearer: Annotated[
        HTTPAuthorizationCredentials | None, Security(_bearer)
    ] = None,
) -> Client:
    """Client auth: ``X-Client-Id`` + ``X-Client-Key``, or a Bearer key.

    Also enforces the client's requests-per-minute quota.

    Raises:
        Unauthorized: Missing or invalid credentials.
        QuotaExceeded: Over the request rate quota.
    """
    if client_key is None and client_id is not None and bearer is None:
        raise Unauthorized("X-Client-Id needs X-Client-Key")
    identity = await _authenticate_client(
        context, client_id, client_key, bearer
    )
    if identity is None:
        raise Unauthorized(
            "client credentials are required: X-Client-Id and "
            "X-Client-Key headers, or Authorization: Bearer <key>"
        )
    bind_context(client_id=str(identity.id))
    context.rate_gate.admit(
        str(identity.id), identity.quotas.requests_per_minute
    )
    return identity


async def optional_client(
    context: Context,
    client_id: ClientIdHeader = None,
    client_key: Annotated[str | None, Security(_client_key_header)] = None,
    bearer: Annotated[
        HTTPAuthorizationCredentials | None, Security(_bearer)
    ] = None,
) -> Client | None:
    """Client auth that yields None instead of failing."""
    try:
        return await _authenticate_client(
            context, client_id, client_key, bearer
        )
    except Unauthorized:
        return None


def require_docs_user(
    context: Context,
    credentials: Annotated[
        HTTPBasicCredentials | None, Security(_basic)
    ] = None,
) -> None:
    """HTTP basic auth for the API docs (``DOCS_USER``/``DOCS_SECRET``).

    Raises:
        Unauthorized: Missing or wrong credentials (with a challenge).
    """
    settings = context.settings
    user_ok = admin_key_matches(
        credentials.username if credentials else None, settings.docs_user
    )
    secret_ok = admin_key_matches(
        credentials.password if credentials else None,
        settings.docs_secret.get_secret_value(),
    )
    if not (user_ok and secret_ok):
        raise Unauthorized(
            "docs need HTTP basic auth",
            details={"challenge": 'Basic realm="metasync docs"'},
        )


AdminKey = Annotated[str, Depends(require_admin)]
OptionalAdmin = Annotated[str | None, Depends(optional_admin)]
CurrentClient = Annotated[Client, Depends(require_client)]
OptionalClient = Annotated[Client | None, Depends(optional_client)]
DocsUser = Annotated[None, Depends(require_docs_user)]
