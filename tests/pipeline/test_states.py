import pytest

from pipeline.errors import InvalidTransition
from pipeline.states import (
    ITEM_TRANSITIONS,
    JOB_TRANSITIONS,
    Actor,
    Status,
    allowed,
    check,
    sources,
)

S = Status


@pytest.mark.parametrize(
    ("actor", "current", "target"),
    [
        (Actor.SYSTEM, S.PENDING, S.PROCESSING),
        (Actor.SYSTEM, S.PROCESSING, S.PROCESSED),
        (Actor.SYSTEM, S.PROCESSING, S.FAILED),
        (Actor.SYSTEM, S.PROCESSING, S.PENDING),
        (Actor.CLIENT, S.PENDING, S.CANCELED),
        (Actor.CLIENT, S.PROCESSED, S.CONSUMED),
        (Actor.CLIENT, S.PROCESSED, S.ERROR_CONSUMING),
        (Actor.ADMIN, S.FAILED, S.PENDING),
        (Actor.ADMIN, S.PENDING, S.CANCELED),
    ],
)
def test_item_transitions_of_the_spec(actor, current, target):
    assert allowed(ITEM_TRANSITIONS, actor, current, target)


@pytest.mark.parametrize(
    ("actor", "current", "target"),
    [
        (Actor.CLIENT, S.FAILED, S.PENDING),
        (Actor.CLIENT, S.PROCESSING, S.PROCESSED),
        (Actor.CLIENT, S.PROCESSED, S.CANCELED),
        (Actor.SYSTEM, S.PROCESSED, S.PENDING),
        (Actor.SYSTEM, S.CANCELED, S.PROCESSING),
        (Actor.ADMIN, S.CONSUMED, S.PENDING),
    ],
)
def test_other_item_transitions_are_refused(actor, current, target):
    assert not allowed(ITEM_TRANSITIONS, actor, current, target)


def test_check_raises_409_with_the_current_status():
    with pytest.raises(InvalidTransition) as error:
        check(JOB_TRANSITIONS, "job", Actor.CLIENT, "PROCESSED", S.CANCELED)
    assert error.value.status_code == 409
    assert error.value.details["currentStatus"] == "PROCESSED"
    check(JOB_TRANSITIONS, "job", Actor.CLIENT, "PROCESSING", S.CANCELED)


def test_sources_are_the_guard_of_an_atomic_update():
    assert set(sources(JOB_TRANSITIONS, Actor.CLIENT, S.CANCELED)) == {
        S.PENDING,
        S.PROCESSING,
    }
    assert set(sources(JOB_TRANSITIONS, Actor.CLIENT, S.CONSUMED)) == {
        S.PROCESSED,
        S.FAILED,
    }
    assert set(sources(JOB_TRANSITIONS, Actor.ADMIN, S.PENDING)) == {
        S.PROCESSED,
        S.FAILED,
    }
    assert sources(JOB_TRANSITIONS, Actor.SYSTEM, S.PROCESSED) == []
