"""The provider batch interface: submit, poll, read results, cancel.

A :class:`BatchClient` sends many :class:`BatchRequest` to one model
through its vendor's batch API (about half the price of live calls,
answered within a day) and reads the answers back by custom id::

    ref = await client.submit(config, key, requests)    # one provider batch
    status = await client.poll(config, key, ref)        # until status.ended
    async for custom_id, outcome in client.results(config, key, ref):
        ...                                      # Completion | LineError
    await client.cancel(config, key, ref)

It builds its SDK client and reads the model config exactly as the live
adapter of the same provider does (the same ``config`` mapping and key),
and maps SDK failures to the same typed
:class:`~providers.errors.ProviderError`. A per-line failure is data, a
:class:`LineError`, never an exception. A batch holds at most the
vendor's :class:`BatchLimits`; :meth:`BatchClient.split` cuts larger work
into batches that fit. Like every provider module it knows nothing of
MongoDB or Ray: the caller stores the :class:`ProviderBatchRef` (so a
restarted process resumes polling instead of submitting again).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .._adapter import PLACEHOLDER_KEY, SDKAdapter
from .._call import CallContext, error_boundary
from .._clients import ClientCache
from ..base import Completion, CompletionRequest
from ..errors import AuthenticationError, ProviderError
from .split import BatchLimits, split_requests

#: What every vendor accepts as a custom id (Anthropic's rule, the
#: strictest); the pipeline's item ids fit it.
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

BatchState = Literal["running", "completed", "expired", "failed", "cancelled"]
ENDED_STATES: frozenset[str] = frozenset(
    {"completed", "expired", "failed", "cancelled"}
)


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a provider batch.

    Attributes:
        custom_id: The caller's key for the answer (see :data:`CUSTOM_ID`).
        request: What to ask.
    """

    custom_id: str
    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class ProviderBatchRef:
    """What identifies a submitted batch; store it to resume polling.

    Attributes:
        provider: The registry name of the provider.
        batch_id: The vendor's id (Gemini's is ``batches/...``).
        line_ids: The custom ids in submission order, kept only where
            the vendor answers by position (Gemini).
    """

    provider: str
    batch_id: str
    line_ids: tuple[str, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        """A plain mapping to store."""
        doc: dict[str, Any] = {
            "provider": self.provider,
            "batchId": self.batch_id,
        }
        if self.line_ids:
            doc["lineIds"] = list(self.line_ids)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ProviderBatchRef:
        """Read a stored reference back."""
        return cls(
            provider=str(doc["provider"]),
            batch_id=str(doc["batchId"]),
            line_ids=tuple(doc.get("lineIds") or ()),
        )


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Where a provider batch is.

    Attributes:
        state: ``running`` (validating, in progress, finalizing or being
            cancelled) or how it ended: ``completed``, ``expired`` (some
            lines never ran), ``failed`` (none ran) or ``cancelled``.
        total: Lines in the batch (0 when the vendor does not say).
        succeeded: Lines answered so far, where the vendor says.
        failed: Lines that failed so far, where the vendor says.
        message: Why a failed batch failed.
    """

    state: BatchState
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    message: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the batch will change no more (results can be read)."""
        return self.state in ENDED_STATES


@dataclass(frozen=True, slots=True)
class ListedBatch:
    """A batch as the vendor's list shows it.

    Attributes:
        ref: Its reference.
        created_at: When the vendor created it.
        status: Where it is (``total`` is its number of requests).
    """

    ref: ProviderBatchRef
    created_at: datetime
    status: BatchStatus


@dataclass(frozen=True, slots=True)
class LineError:
    """A line of a batch that brought no answer.

    Attributes:
        error: What went wrong, typed as for a live call (so retries are
            decided the same way).
        ran: False when the line never ran (its batch expired, failed or
            was cancelled first): no attempt was spent on it.
    """

    error: ProviderError
    ran: bool = True


LineOutcome = Completion | LineError
S = TypeVar("S", bound=Hashable)
C = TypeVar("C")


@dataclass
class BatchCall(Generic[S, C]):
    """One call's parsed settings, SDK client and error context."""

    settings: S
    client: C
    ctx: CallContext = field(repr=False)


class BatchClient(ABC, Generic[S, C]):
    """Base class of the batch clients, on a live adapter's plumbing.

    Args:
        adapter: The provider's live adapter, whose config reading, SDK
            client building and error mapping are reused.
        limits: The most one batch may hold; the vendor's by default.
    """

    provider: ClassVar[str]
    default_limits: ClassVar[BatchLimits]
    #: Whether :meth:`find` can tell if a labelled batch was created.
    can_find: ClassVar[bool] = False
    #: Whether :meth:`created_between` lists the key's batches.
    can_list: ClassVar[bool] = False

    def __init__(
        self,
        adapter: SDKAdapter[Any, Any],
        limits: BatchLimits | None = None,
    ) -> None:
        self.adapter = adapter
        self.limits = limits or self.default_limits
        self._clients: ClientCache[Any, Any] = ClientCache(
            adapter.build_client, adapter.close_client
        )

    # -- what each vendor provides ----------------------------------------

    @abstractmethod
    def line_size(self, settings: Any, request: BatchRequest) -> int:
        """The bytes a request takes in the vendor's batch payload."""

    @abstractmethod
    async def _submit(
        self,
        begun: BatchCall[Any, Any],
        requests: Sequence[BatchRequest],
        label: str | None,
    ) -> ProviderBatchRef:
        """Create the provider batch, labelled where the vendor keeps one."""

    async def _find(
        self,
        begun: BatchCall[Any, Any],
        label: str,
        since: datetime,
        line_ids: tuple[str, ...],
    ) -> ProviderBatchRef | None:
        """Look the labelled batch up (vendors with :attr:`can_find`)."""
        raise NotImplementedError

    async def _list(
        self, begun: BatchCall[Any, Any], since: datetime, until: datetime
    ) -> list[ListedBatch]:
        """The batches created in a window (vendors with :attr:`can_list`)."""
        raise NotImplementedError

    @abstractmethod
    async def _poll(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> BatchStatus:
        """Read the batch's status."""

    @abstractmethod
    def _results(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> AsyncIterator[tuple[str, LineOutcome]]:
        """Read the ended batch's lines."""

    @abstractmethod
    async def _cancel(
        self, begun: BatchCall[Any, Any], ref: ProviderBatchRef
    ) -> None:
        """Ask the vendor to stop the batch."""

    # -- the shared plumbing ----------------------------------------------

    def _begin(
        self, config: Mapping[str, Any], api_key: str | None
    ) -> BatchCall[Any, Any]:
        settings = self.adapter.parse_settings(config)
        ctx = CallContext(self.provider, settings.model_label, api_key)
        if settings.common.auth == "none":
            api_key = api_key or PLACEHOLDER_KEY
        elif not api_key:
            raise AuthenticationError(
                f"{self.provider}: no API key was given for a model with "
                "auth 'key'",
                provider=self.provider,
                model=settings.model_label,
            )
        with self._boundary(ctx):
            client = self._clients.get(settings, api_key)
        return BatchCall(settings, client, ctx)

    @contextmanager
    def _boundary(self, ctx: CallContext) -> Any:
        with error_boundary(ctx, self.adapter.map_error):
            yield

    def split(
        self, config: Mapping[str, Any], requests: Sequence[BatchRequest]
    ) -> list[list[BatchRequest]]:
        """Cut requests into batches within the vendor's limits.

        Args:
            config: The model's provider config.
            requests: The requests, in order.

        Returns:
            Consecutive groups, each within :attr:`limits`.

        Raises:
            ValueError: A custom id is not valid, repeats, or one request
                alone exceeds the byte limit (run it live instead).
        """
        settings = self.adapter.parse_settings(config)
        _check_ids(requests)
        return split_requests(
            requests, self.limits, lambda r: self.line_size(settings, r)
        )

    async def submit(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        requests: Sequence[BatchRequest],
        *,
        label: str | None = None,
    ) -> ProviderBatchRef:
        """Create one provider batch.

        Args:
            config: The model's provider config.
            api_key: The model's key.
            requests: The requests; within :attr:`limits` (see
                :meth:`split`).
            label: A caller's id for the batch, kept by the vendors that
                keep one (:attr:`can_find`), so :meth:`find` tells after
                a crash whether the batch was created.

        Returns:
            The reference to store.

        Raises:
            ValueError: The requests do not fit in one batch, or an id is
                invalid or repeats.
            ProviderError: The vendor refused the batch.
        """
        groups = self.split(config, requests)
        if len(groups) != 1:
            raise ValueError(
                f"{len(requests)} requests make {len(groups)} batches; "
                "split them first"
            )
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            return await self._submit(begun, requests, label)

    async def find(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        label: str,
        *,
        since: datetime,
        line_ids: Sequence[str] = (),
    ) -> ProviderBatchRef | None:
        """Find a batch submitted with ``label`` (after a lost answer).

        Args:
            config: The model's provider config.
            api_key: The model's key.
            label: The label given to :meth:`submit`.
            since: A moment before the submission: older batches are
                not looked at.
            line_ids: The custom ids submitted, in order (kept in the
                reference where the vendor answers by position).

        Returns:
            The batch's reference, or None when it was not created.

        Raises:
            NotImplementedError: The vendor keeps no label
                (:attr:`can_find` is False).
            ProviderError: The vendor could not be asked.
        """
        if not self.can_find:
            raise NotImplementedError(
                f"{self.provider} keeps no label on its batches"
            )
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            return await self._find(begun, label, since, tuple(line_ids))

    async def created_between(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        since: datetime,
        until: datetime,
    ) -> list[ListedBatch]:
        """The batches the key created in a window, newest first.

        Where a batch keeps no label, this is how a caller that lost the
        vendor's answer tells whether a batch was created.

        Args:
            config: The model's provider config.
            api_key: The model's key.
            since: The window's start.
            until: The window's end.

        Returns:
            The batches created at or after ``since`` and at or before
            ``until``, whichever model they are for.

        Raises:
            NotImplementedError: The vendor's batches cannot be listed
                here (:attr:`can_list` is False).
            ProviderError: The vendor could not be asked.
        """
        if not self.can_list:
            raise NotImplementedError(
                f"{self.provider}: listing batches is not supported"
            )
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            return await self._list(begun, since, until)

    async def poll(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        ref: ProviderBatchRef,
    ) -> BatchStatus:
        """Read a batch's status.

        Args:
            config: The model's provider config.
            api_key: The model's key.
            ref: The batch.

        Returns:
            The status.

        Raises:
            ProviderError: The vendor could not be asked.
        """
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            return await self._poll(begun, ref)

    async def results(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        ref: ProviderBatchRef,
    ) -> AsyncIterator[tuple[str, LineOutcome]]:
        """Read an ended batch's lines: answers and line errors.

        Lines the vendor reports nothing for did not run; the caller
        treats them as it treats a :class:`LineError` with ``ran=False``.

        Args:
            config: The model's provider config.
            api_key: The model's key.
            ref: The batch (ended: see :meth:`poll`).

        Yields:
            ``(custom_id, Completion | LineError)`` pairs.

        Raises:
            ProviderError: The results could not be read.
        """
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            async for pair in self._results(begun, ref):
                yield pair

    async def cancel(
        self,
        config: Mapping[str, Any],
        api_key: str | None,
        ref: ProviderBatchRef,
    ) -> None:
        """Ask the vendor to stop a batch; poll until it has ended.

        Args:
            config: The model's provider config.
            api_key: The model's key.
            ref: The batch.

        Raises:
            ProviderError: The vendor refused (e.g. the batch had ended).
        """
        begun = self._begin(config, api_key)
        with self._boundary(begun.ctx):
            await self._cancel(begun, ref)

    async def aclose(self) -> None:
        """Close the SDK clients of the running event loop."""
        await self._clients.aclose()


def _check_ids(requests: Sequence[BatchRequest]) -> None:
    seen: set[str] = set()
    for item in requests:
        if not CUSTOM_ID.match(item.custom_id):
            raise ValueError(
                f"custom id {item.custom_id!r}: 1-64 letters, digits, "
                "'_' or '-'"
            )
        if item.custom_id in seen:
            raise ValueError(f"custom id {item.custom_id!r} repeats")
        seen.add(item.custom_id)


def line_error(
    error: ProviderError, ctx: CallContext, *, ran: bool = True
) -> LineError:
    """A line error stamped with the batch's provider and model."""
    error.provider = error.provider or ctx.provider
    error.model = error.model or ctx.model
    return LineError(error, ran)
