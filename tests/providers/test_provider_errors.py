"""Every error pickles with every field: they cross Ray process boundaries."""

from __future__ import annotations

import pickle

import pytest

from providers.errors import (
    AuthenticationError,
    ConfigError,
    ContentFilterError,
    MissingDependencyError,
    PermanentError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    StreamError,
    TransientError,
    UnknownProviderError,
)

PROVIDER_ERRORS = [
    ProviderError,
    RateLimitError,
    TransientError,
    ProviderTimeout,
    StreamError,
    PermanentError,
    ContentFilterError,
    AuthenticationError,
]


@pytest.mark.parametrize("cls", PROVIDER_ERRORS)
def test_provider_errors_round_trip_with_every_field(
    cls: type[ProviderError],
) -> None:
    error = cls(
        "boom",
        provider="openai",
        model="gpt-x",
        status_code=429,
        retry_after=1.25,
    )
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert str(clone) == "boom"
    assert clone.message == "boom"
    assert (clone.provider, clone.model) == ("openai", "gpt-x")
    assert (clone.status_code, clone.retry_after) == (429, 1.25)
    assert clone.retryable == cls.retryable
    assert clone.kind == cls.kind


def test_config_error_round_trips_with_its_field() -> None:
    error = ConfigError("bad", provider="gemini", field="baseUrl")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is ConfigError
    assert (clone.message, clone.provider, clone.field) == (
        "bad",
        "gemini",
        "baseUrl",
    )


def test_unknown_provider_error_round_trips() -> None:
    error = UnknownProviderError("nope", ["openai", "gemini"])
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.name, clone.known) == ("nope", ["openai", "gemini"])
    assert str(clone) == str(error)
    assert "gemini, openai" in str(clone)


def test_missing_dependency_error_round_trips() -> None:
    error = MissingDependencyError("gemini", "google-genai")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.provider, clone.package) == ("gemini", "google-genai")
    assert "pip install google-genai" in str(clone)


def test_retry_classes_follow_the_tree() -> None:
    assert RateLimitError.retryable and TransientError.retryable
    assert issubclass(ProviderTimeout, TransientError)
    assert issubclass(StreamError, TransientError)
    assert issubclass(ContentFilterError, PermanentError)
    assert not PermanentError.retryable
    assert not AuthenticationError.retryable
