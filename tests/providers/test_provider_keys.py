"""Which variable holds a model's key, and reading it without leaking it."""

from __future__ import annotations

import pytest

from providers.errors import AuthenticationError, ConfigError
from providers.keys import key_env_var, resolve_api_key


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("gpt-4", "GPT_4_KEY"),
        ("claude-3.5-sonnet", "CLAUDE_3_5_SONNET_KEY"),
        ("my model/v2", "MY_MODEL_V2_KEY"),
        ("Gemini", "GEMINI_KEY"),
    ],
)
def test_key_env_var_follows_the_seed_convention(
    model: str, variable: str
) -> None:
    assert key_env_var(model) == variable


def test_resolve_reads_the_conventional_variable() -> None:
    key = resolve_api_key("gpt-4", {}, {"GPT_4_KEY": "sk-abc "})
    assert key == "sk-abc"


def test_api_key_env_overrides_the_convention() -> None:
    environ = {"GPT_4_KEY": "conventional", "SHARED_OPENAI": "named"}
    config = {"apiKeyEnv": "SHARED_OPENAI"}
    assert resolve_api_key("gpt-4", config, environ) == "named"


def test_auth_none_needs_no_key() -> None:
    assert resolve_api_key("local", {"auth": "none"}, {}) is None


def test_missing_key_names_the_variable_not_a_value() -> None:
    with pytest.raises(AuthenticationError) as caught:
        resolve_api_key("gpt-4", {}, {"OTHER_KEY": "sk-secret"})
    assert "GPT_4_KEY" in str(caught.value)
    assert "sk-secret" not in str(caught.value)
    assert caught.value.model == "gpt-4"


def test_empty_key_counts_as_missing() -> None:
    with pytest.raises(AuthenticationError):
        resolve_api_key("gpt-4", {}, {"GPT_4_KEY": "  "})


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"auth": "token"}, "auth"),
        ({"apiKeyEnv": "not a name"}, "apiKeyEnv"),
        ({"apiKeyEnv": ""}, "apiKeyEnv"),
    ],
)
def test_bad_auth_settings_name_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_api_key("gpt-4", config, {})
    assert caught.value.field == field
