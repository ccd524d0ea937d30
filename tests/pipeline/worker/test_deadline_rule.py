"""The rule that sends items of batch and auto jobs to batches or live."""

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.jobs.mode import BATCH_WINDOW
from pipeline.worker.batch_deadline import DeadlineRule

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
MARGIN = timedelta(hours=2)


def _rule():
    return DeadlineRule(MARGIN, clock=lambda: NOW)


def _item(mode, left=None):
    item = {"mode": mode}
    if left is not None:
        item["deadline"] = NOW + left
    return item


@pytest.mark.parametrize(
    ("left", "to_batch"),
    [
        (BATCH_WINDOW + MARGIN, True),
        (timedelta(days=7), True),
        (BATCH_WINDOW + MARGIN - timedelta(seconds=1), False),
        (timedelta(hours=3), False),
        (None, False),
    ],
)
def test_auto_goes_to_batches_while_the_window_and_margin_fit(left, to_batch):
    assert _rule().to_batch(_item("auto", left)) is to_batch


@pytest.mark.parametrize(
    ("left", "to_batch"),
    [
        (None, True),
        (BATCH_WINDOW, True),
        (MARGIN + timedelta(seconds=1), True),
        (MARGIN, False),
        (-timedelta(hours=1), False),
    ],
)
def test_batch_goes_to_batches_until_its_deadline_is_near(left, to_batch):
    assert _rule().to_batch(_item("batch", left)) is to_batch


def test_live_items_never_go_to_batches():
    assert not _rule().to_batch(_item("live", timedelta(days=7)))
    assert not _rule().to_batch({})


def test_items_are_due_back_once_within_the_margin():
    rule = _rule()
    assert rule.due_back(NOW + MARGIN)
    assert not rule.due_back(NOW + MARGIN + timedelta(seconds=1))
    assert not rule.due_back(None)
