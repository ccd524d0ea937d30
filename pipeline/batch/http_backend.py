"""Jobs of a running service, over its HTTP API.

Authenticates with the client key as ``Authorization: Bearer``; every
error answer (``{"error": {"code", "message", ...}}``) becomes the
domain error of its status, so the driver handles a remote service
exactly as the local database.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
from bson import ObjectId

from pipeline.batch.backend import PromptInfo, ResultItem
from pipeline.batch.formats import to_api_item
from pipeline.errors import (
    Conflict,
    InvalidTransition,
    MetasyncError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from pipeline.jobs.shapes import JobOptions
from pipeline.jobs.validation import ItemSpec

#: Seconds one request may take; a job of many items is inserted by
#: the service before it answers.
REQUEST_TIMEOUT_S = 300.0
#: Jobs read per page when looking one up by its idempotency key.
_LIST_PAGE = 500
#: Pages of the client's jobs searched for a key, newest first.
_LIST_PAGES = 20


class HttpBackend:
    """A client's jobs on the service at ``url``."""

    def __init__(self, url: str, api_key: str) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._session: aiohttp.ClientSession | None = None

    @property
    def target(self) -> str:
        """The service's URL."""
        return self._url

    @property
    def max_job_items(self) -> int | None:
        """Unknown: a too large job is refused with a 413."""
        return None

    async def model_names(self) -> set[str]:
        """Names of the active models (``GET /models``)."""
        body = await self._request("GET", "/models")
        return {model["name"] for model in body["items"]}

    async def prompt(
        self, prompt_id: str, version: int | None
    ) -> PromptInfo | None:
        """The client's prompt (``GET /prompts/{id}[/versions/{n}]``)."""
        if not ObjectId.is_valid(prompt_id):
            return None  # Also keeps the text out of the URL's path.
        path = f"/prompts/{prompt_id}"
        if version is not None:
            path += f"/versions/{version}"
        try:
            body = await self._request("GET", path)
        except (NotFound, ValidationFailed):
            return None
        return PromptInfo(user_template=body.get("userTemplate"))

    async def submit(self, items: list[ItemSpec], options: JobOptions) -> str:
        """``POST /jobs``; a repeated key answers with the original job."""
        body = {
            "items": [to_api_item(item) for item in items],
            "priority": options.priority,
            "maxAttempts": options.max_attempts,
            "cache": options.cache,
            "idempotencyKey": options.idempotency_key,
            "mode": options.mode,
            "fallbacks": options.fallbacks,
        }
        if options.deadline is not None:
            body["deadline"] = f"{int(options.deadline.total_seconds())}s"
        job = await self._request("POST", "/jobs", json=body)
        return str(job["id"])

    async def results(
        self, job_id: str, cursor: int, limit: int
    ) -> list[ResultItem]:
        """A page of ``GET /jobs/{id}/results``."""
        page = await self._request(
            "GET",
            f"/jobs/{job_id}/results",
            params={"cursor": cursor, "limit": limit},
        )
        return [ResultItem.from_doc(item) for item in page["items"]]

    async def find_job(self, key: str) -> str | None:
        """Search the client's recent jobs for one with this key."""
        cursor: str | None = None
        for _ in range(_LIST_PAGES):
            params: dict[str, Any] = {"limit": _LIST_PAGE}
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._request("GET", "/jobs", params=params)
            for job in page["items"]:
                if job.get("idempotencyKey") == key:
                    return str(job["id"])
            cursor = page.get("nextCursor")
            if cursor is None:
                break
        return None

    async def cancel(self, job_id: str) -> None:
        """``POST /jobs/{id}/cancel``; a finished job is left alone."""
        with contextlib.suppress(InvalidTransition):
            await self._request("POST", f"/jobs/{job_id}/cancel")

    async def consume(self, job_id: str) -> str:
        """``POST /jobs/{id}/consume``; returns the job's status."""
        try:
            job = await self._request("POST", f"/jobs/{job_id}/consume")
        except InvalidTransition as error:
            return str(error.details["currentStatus"])
        return str(job["status"])

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            )
        try:
            async with self._session.request(
                method, self._url + path, json=json, params=params
            ) as response:
                body = await response.json(content_type=None)
                if response.status >= 400:
                    raise _error(response.status, body, response.headers)
                return body
        except (TimeoutError, aiohttp.ClientError) as error:
            raise Unavailable(
                f"cannot reach {self._url}: {error or type(error).__name__}"
            ) from None
        except ValueError:
            raise Unavailable(
                f"{self._url}{path} did not answer with JSON"
            ) from None


def _error(status: int, body: Any, headers: Any) -> MetasyncError:
    """The domain error an error answer stands for."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"HTTP {status}"}
    message = str(error.get("message", f"HTTP {status}"))
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    if status == 400:
        failed = ValidationFailed(message, error.get("errors") or [])
        failed.details.update(details)
        return failed
    if status in (401, 403):
        return Unauthorized(message)
    if status == 404:
        return NotFound(details.get("resource", "resource"), details.get("id"))
    if status == 409 and error.get("code") == "invalid_transition":
        return InvalidTransition(
            details.get("resource", "job"),
            details.get("currentStatus", "?"),
            details.get("targetStatus", "?"),
        )
    if status == 409:
        return Conflict(message, details=details)
    if status == 413:
        return PayloadTooLarge(message)
    if status == 429:
        retry_after = headers.get("Retry-After") or details.get("retryAfter")
        return QuotaExceeded(message, retry_after=float(retry_after or 1))
    if status >= 500:
        return Unavailable(f"HTTP {status}: {message}")
    return MetasyncError(f"HTTP {status}: {message}")
