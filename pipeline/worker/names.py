"""Names of the project's Ray actors (found by name, in one namespace).

Every name ends with ``@<code version>`` (:mod:`pipeline.code_version`):
actors of two versions of the code never share a name, so a deploy of
new code creates new actors instead of finding the old ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

#: What every project actor's name starts with.
PREFIX = "metasync-"
COORDINATOR = "metasync-limits"
OPTIMIZER = "metasync-optimizer"
WORKER_PREFIX = "metasync-worker-"
#: Between an actor's role and its code version.
VERSION_SEPARATOR = "@"
#: The version of actors named before names carried one.
UNVERSIONED = "unversioned"


def versioned(role: str, version: str) -> str:
    """The actor name of ``role`` (a name without version) at ``version``."""
    return f"{role}{VERSION_SEPARATOR}{version}"


def worker_role(provider: str, replica: int) -> str:
    """The role of one replica of a provider's worker."""
    return f"{WORKER_PREFIX}{provider}-{replica}"


def worker_name(provider: str, replica: int, version: str) -> str:
    """The actor name of one replica of a provider's worker."""
    return versioned(worker_role(provider, replica), version)


def coordinator_name(version: str) -> str:
    """The actor name of the limits coordinator."""
    return versioned(COORDINATOR, version)


def optimizer_name(version: str) -> str:
    """The actor name of the optimizer."""
    return versioned(OPTIMIZER, version)


@dataclass(frozen=True)
class ActorName:
    """A project actor's name, parsed.

    Attributes:
        name: The whole name.
        role: The name without its version (``metasync-limits``).
        version: The code version it runs.
    """

    name: str
    role: str
    version: str

    @classmethod
    def parse(cls, name: str) -> ActorName | None:
        """The parts of a project actor's name; None for other names.

        A name without a version (given by code from before versions)
        parses with the version :data:`UNVERSIONED`, so it is retired.
        """
        role, separator, version = name.rpartition(VERSION_SEPARATOR)
        if not separator:
            role, version = name, UNVERSIONED
            if role not in (COORDINATOR, OPTIMIZER) and not (
                role.startswith(WORKER_PREFIX)
            ):
                return None
        if not role.startswith(PREFIX) or not version:
            return None
        return cls(name, role, version)

    @property
    def is_worker(self) -> bool:
        """Whether this is a provider worker."""
        return self.role.startswith(WORKER_PREFIX)

    def worker_slot(self) -> tuple[str, int] | None:
        """A worker's provider and replica index (None for others)."""
        if not self.is_worker:
            return None
        provider, _, replica = self.role[len(WORKER_PREFIX) :].rpartition("-")
        if not provider or not replica.isdigit():
            return None
        return provider, int(replica)


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker is: its slot, its actor name and this life of it.

    Attributes:
        provider: The provider it serves.
        replica: Its replica index.
        replicas: How many replicas the provider has (``WORKER_REPLICAS``).
        name: Its actor name (:func:`worker_name`).
        incarnation: This life's id (a restart is a new one).
    """

    provider: str
    replica: int
    replicas: int
    name: str
    incarnation: str

    @classmethod
    def new(
        cls, provider: str, replica: int, replicas: int, version: str
    ) -> WorkerIdentity:
        """A new life of replica ``replica`` of ``provider``'s worker."""
        return cls(
            provider,
            replica,
            replicas,
            worker_name(provider, replica, version),
            uuid.uuid4().hex[:12],
        )

    @property
    def role(self) -> str:
        """Its name without the code version (:func:`worker_role`)."""
        return worker_role(self.provider, self.replica)

    @property
    def holder(self) -> str:
        """Name and incarnation: what its leases and journal lanes carry."""
        return f"{self.name}/{self.incarnation}"

    def earlier_life(self, token: str, taken_over: set[str]) -> bool:
        """Whether a lane or lease token is of an earlier life of this worker.

        Or of a retired worker of another code version that this one
        took over (named in ``taken_over``: it is dead).
        """
        name, _, rest = token.partition("/")
        if name in taken_over:
            return True
        incarnation = rest.partition("/")[0]
        return name == self.name and incarnation != self.incarnation
