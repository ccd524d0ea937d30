import pickle

import pytest

from pipeline.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    ValidationFailed,
)

ERRORS = [
    ValidationFailed("bad", [{"field": "items[0].model", "message": "x"}]),
    ValidationFailed.single("name", "required"),
    Unauthorized("no"),
    NotFound("job", "abc"),
    Conflict("busy"),
    InvalidTransition("job", "PROCESSED", "CANCELED"),
    PayloadTooLarge("big"),
    QuotaExceeded("slow down", retry_after=2.5),
    DatabaseUnavailable("down"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.message == error.message
    assert copy.details == error.details
    assert copy.status_code == error.status_code
    assert str(copy) == str(error)


def test_statuses():
    assert [e.status_code for e in ERRORS] == [
        400,
        400,
        401,
        404,
        409,
        409,
        413,
        429,
        503,
    ]


def test_invalid_transition_names_the_current_status():
    error = InvalidTransition("item", "PROCESSED", "CANCELED")
    assert error.details["currentStatus"] == "PROCESSED"
    assert "PROCESSED" in error.message


def test_quota_retry_after():
    assert QuotaExceeded("x", retry_after=3).retry_after == 3
