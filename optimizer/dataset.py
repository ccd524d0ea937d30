"""A run's dataset: its train/validation split and its user messages.

The split is drawn once from the run's seed, so a resumed run screens
and validates on exactly the examples it began with.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from optimizer.config import SplitConfig
from optimizer.records import Example
from pipeline.templates import render


def validation_count(total: int, split: SplitConfig) -> int:
    """How many of ``total`` examples go to validation.

    Args:
        total: Examples in the dataset.
        split: The run's split (``validationSize`` wins).

    Returns:
        The size asked for, or the fraction of ``total`` rounded, at
        least one (a small dataset still gets a validation example).
    """
    if split.validation_size is not None:
        return split.validation_size
    return max(1, round(total * split.validation_fraction))


def split_dataset(
    examples: Sequence[Example], split: SplitConfig, seed: int
) -> tuple[list[Example], list[Example]]:
    """Divide a dataset into train (minibatches) and validation.

    Args:
        examples: The dataset, ids unique.
        split: The run's split configuration.
        seed: The run's seed; the same seed gives the same split.

    Returns:
        ``(train, validation)``, each in the dataset's order.

    Raises:
        ValueError: The split leaves train or validation empty, or two
            examples share an id (validation scores are kept per id).
    """
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("dataset example ids must be unique")
    total = len(examples)
    wanted = validation_count(total, split)
    if total == 0 or wanted >= total:
        raise ValueError(
            f"split leaves no {'validation' if total == 0 else 'train'} "
            f"examples: {total} examples, {wanted} for validation"
        )
    # A string seed hashes stably (unlike tuples), and "split" keeps this
    # draw apart from the iterations' draws.
    chosen = set(random.Random(f"{seed}:split").sample(range(total), wanted))
    train = [e for i, e in enumerate(examples) if i not in chosen]
    validation = [e for i, e in enumerate(examples) if i in chosen]
    return train, validation


def render_user_message(template: str, example: Example) -> str:
    """The user message of one example.

    Args:
        template: The run's user template (``{{variable}}`` placeholders).
        example: The example whose inputs fill it.

    Returns:
        The rendered message.

    Raises:
        KeyError: The template names a variable the example lacks.
    """
    return render(template, example.inputs)
