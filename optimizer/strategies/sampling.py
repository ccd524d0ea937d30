"""Minibatch sampling: which train examples screen an iteration's ideas.

:class:`EpochSampler` walks the train set in shuffled epochs, as GEPA's
epoch-shuffled sampler does, so every example is seen once per epoch
before any is seen twice. Unlike GEPA's, it keeps no position between
calls: iteration ``i``'s minibatch is a function of (seed, i, train)
alone, so a resumed run draws exactly the minibatches the original did.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from optimizer.records import Example


class BatchSampler(Protocol):
    """Chooses the train examples of one iteration."""

    def sample(self, iteration: int, rng: random.Random) -> list[Example]:
        """The minibatch of ``iteration`` (1-based)."""
        ...


class EpochSampler:
    """Shuffled epochs of the train set, walked in minibatches.

    Each epoch's order is drawn from ``seed`` and the epoch number; a
    last minibatch that would be short is filled from the start of the
    same epoch's order (never repeating an example within a minibatch).

    Args:
        train: The train examples.
        size: Examples per minibatch (capped at the train set's size).
        seed: The run's seed.

    Raises:
        ValueError: ``train`` is empty or ``size`` is below one.
    """

    def __init__(
        self, train: Sequence[Example], size: int, *, seed: int = 0
    ) -> None:
        if not train:
            raise ValueError("no train examples to sample from")
        if size < 1:
            raise ValueError(f"minibatch size must be positive, got {size}")
        self._train = list(train)
        self.size = min(size, len(self._train))
        self._seed = seed
        # Minibatches per epoch, the last one padded if need be.
        self.batches_per_epoch = -(-len(self._train) // self.size)

    def epoch_order(self, epoch: int) -> list[Example]:
        """The train set in the order epoch ``epoch`` (0-based) walks it."""
        order = list(self._train)
        random.Random(f"{self._seed}:epoch:{epoch}").shuffle(order)
        padding = self.batches_per_epoch * self.size - len(order)
        return order + order[:padding]

    def sample(
        self, iteration: int, rng: random.Random | None = None
    ) -> list[Example]:
        """The minibatch of ``iteration``.

        Args:
            iteration: The iteration, 1-based.
            rng: Unused: the order comes from the seed and the epoch, so
                that it does not depend on which calls came before.

        Returns:
            ``size`` distinct train examples.

        Raises:
            ValueError: ``iteration`` is below one.
        """
        del rng
        if iteration < 1:
            raise ValueError(f"iterations start at 1, got {iteration}")
        epoch, batch = divmod(iteration - 1, self.batches_per_epoch)
        start = batch * self.size
        return self.epoch_order(epoch)[start : start + self.size]
