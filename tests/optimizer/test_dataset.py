import pytest

from optimizer.config import SplitConfig
from optimizer.dataset import render_user_message, split_dataset
from optimizer.records import Example


def _examples(n: int) -> list[Example]:
    return [Example(f"e{i}", {"input": f"q{i}"}, str(i)) for i in range(n)]


def test_split_is_deterministic_in_the_seed() -> None:
    examples = _examples(20)
    split = SplitConfig(validation_fraction=0.25)
    train, validation = split_dataset(examples, split, seed=3)
    assert (train, validation) == split_dataset(examples, split, seed=3)
    assert len(validation) == 5
    assert len(train) == 15
    assert {e.id for e in train} | {e.id for e in validation} == {
        e.id for e in examples
    }
    assert not {e.id for e in train} & {e.id for e in validation}
    others = [split_dataset(examples, split, seed=s)[1] for s in range(5)]
    assert any(v != validation for v in others)


def test_split_keeps_dataset_order() -> None:
    examples = _examples(10)
    train, validation = split_dataset(examples, SplitConfig(), seed=1)
    order = [e.id for e in examples]
    assert [e.id for e in train] == [
        i for i in order if i in {e.id for e in train}
    ]
    assert [order.index(e.id) for e in validation] == sorted(
        order.index(e.id) for e in validation
    )


def test_validation_size_wins_over_fraction() -> None:
    split = SplitConfig(validation_fraction=0.9, validation_size=3)
    train, validation = split_dataset(_examples(10), split, seed=0)
    assert (len(train), len(validation)) == (7, 3)


def test_small_dataset_still_gets_a_validation_example() -> None:
    split = SplitConfig(validation_fraction=0.1)
    train, validation = split_dataset(_examples(3), split, seed=0)
    assert (len(train), len(validation)) == (2, 1)


@pytest.mark.parametrize(
    ("size", "split"),
    [
        (0, SplitConfig()),
        (1, SplitConfig()),
        (5, SplitConfig(validation_size=5)),
        (5, SplitConfig(validation_fraction=0.95)),
    ],
)
def test_empty_side_is_an_error_naming_the_split(
    size: int, split: SplitConfig
) -> None:
    with pytest.raises(ValueError, match="split"):
        split_dataset(_examples(size), split, seed=0)


def test_duplicate_ids_are_rejected() -> None:
    examples = [*_examples(4), Example("e1", {"input": "again"})]
    with pytest.raises(ValueError, match="unique"):
        split_dataset(examples, SplitConfig(), seed=0)


def test_render_user_message() -> None:
    example = Example("a", {"input": "What is 2 + 2?", "n": 3})
    assert (
        render_user_message("Q: {{input}} ({{ n }})", example)
        == "Q: What is 2 + 2? (3)"
    )


def test_render_user_message_missing_variable_names_it() -> None:
    with pytest.raises(KeyError, match="context"):
        render_user_message("{{context}}: {{input}}", Example("a", {}))
