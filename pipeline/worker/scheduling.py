"""The scheduling policy: which pending work a worker takes, and how much.

Every scheduling decision a worker makes goes through one
:class:`SchedulingPolicy`: the order in which jobs give up their items
(fairness across clients, priority), which jobs read their next window,
how many items to claim, and whether batch items wait for chat calls.
:class:`DefaultScheduling` is the behaviour the README describes; a new
policy is one class with the same four methods, given to the worker (or
to a :class:`~pipeline.worker.backlog.Backlog`) in its constructor. A
policy does no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from bson import ObjectId

if TYPE_CHECKING:
    from pipeline.worker.backlog import JobTrack

#: Jobs per client that read windows ahead of claiming.
READ_AHEAD_JOBS = 2


class SchedulingPolicy(Protocol):
    """How a worker orders and sizes its work."""

    def take_order(
        self, jobs: Sequence[JobTrack], model: str
    ) -> Iterator[JobTrack]:
        """The jobs to take ``model``'s next items from, in order.

        The backlog takes one ready item of ``model`` from each job
        yielded, and stops asking once it has taken enough; the policy
        sees the ready counts change as it goes.

        Args:
            jobs: Every job the worker tracks (some canceled, some with
                nothing ready for ``model``).
            model: The model whose items are taken.
        """
        ...

    def jobs_to_read(
        self, jobs: Sequence[JobTrack], low_water: int
    ) -> list[JobTrack]:
        """Jobs that should read their next window now.

        Args:
            jobs: Every job the worker tracks.
            low_water: Ready items below which a job may read more.
        """
        ...

    def claim_size(self, waiting: int, capacity: int, max_batch: int) -> int:
        """How many items of a model to claim now (0: none).

        Args:
            waiting: Items claimed and not yet started.
            capacity: Calls the model's limiter lets run at once.
            max_batch: The most items one claim may take.
        """
        ...

    def batch_may_start(self, chat_waiting: int) -> bool:
        """Whether a batch item may start while chat calls wait.

        Args:
            chat_waiting: Chat calls waiting for a slot of the model.
        """
        ...


class DefaultScheduling:
    """Clients take turns; priority, then age, within a client; chat first.

    Per model, clients take turns (round-robin, one item per turn), so
    one client's million items cannot starve another client's ten; the
    turn order rotates across takes so nobody always goes first. Within
    a client the job with the highest priority goes first, then the
    oldest. Only each client's first :data:`READ_AHEAD_JOBS` jobs read
    ahead, so memory stays bounded however many jobs are active. A model
    keeps up to two rounds of work claimed, so its slots never wait for a
    claim to come back from the database; while a chat call waits for a
    slot, no batch item of its model starts.
    """

    def __init__(self) -> None:
        # Clients in turn order (those with tracked jobs).
        self._turn: deque[ObjectId] = deque()

    @staticmethod
    def job_key(track: JobTrack) -> tuple[int, ObjectId]:
        """Sort key within a client: priority desc, then oldest first."""
        return (-track.priority, track.job_id)

    def take_order(
        self, jobs: Sequence[JobTrack], model: str
    ) -> Iterator[JobTrack]:
        """Each client's best job with ready items, clients in turns."""
        self._update_turn(jobs)
        clients = [
            c for c in self._turn if self._best(jobs, c, model) is not None
        ]
        if self._turn:
            self._turn.rotate(-1)
        while clients:
            for client in list(clients):
                best = self._best(jobs, client, model)
                if best is None:
                    clients.remove(client)
                    continue
                yield best

    def jobs_to_read(
        self, jobs: Sequence[JobTrack], low_water: int
    ) -> list[JobTrack]:
        """Each client's first jobs with windows left and few ready."""
        by_client: dict[ObjectId, list[JobTrack]] = {}
        for track in jobs:
            if track.canceled or (track.fully_read and not track.total_ready):
                continue
            by_client.setdefault(track.client_id, []).append(track)
        wanted = []
        for tracks in by_client.values():
            tracks.sort(key=self.job_key)
            for track in tracks[:READ_AHEAD_JOBS]:
                if (
                    not track.loading
                    and not track.fully_read
                    and track.total_ready < low_water
                ):
                    wanted.append(track)
        return wanted

    def claim_size(self, waiting: int, capacity: int, max_batch: int) -> int:
        """Up to two rounds of calls, once fewer than one round waits."""
        capacity = max(1, capacity)
        if waiting >= capacity:
            return 0
        return min(max_batch, 2 * capacity - waiting)

    def batch_may_start(self, chat_waiting: int) -> bool:
        """Interactive calls go first: none may be waiting."""
        return not chat_waiting

    def _update_turn(self, jobs: Sequence[JobTrack]) -> None:
        """New clients join the end of the turn; gone clients leave it."""
        present = {t.client_id for t in jobs}
        turn = deque(c for c in self._turn if c in present)
        for track in jobs:
            if track.client_id not in turn:
                turn.append(track.client_id)
        self._turn = turn

    def _best(
        self, jobs: Sequence[JobTrack], client: ObjectId, model: str
    ) -> JobTrack | None:
        """The client's first job (by :meth:`job_key`) ready for model."""
        tracks = [
            t
            for t in jobs
            if t.client_id == client
            and t.ready_count(model)
            and not t.canceled
        ]
        return min(tracks, key=self.job_key, default=None)
