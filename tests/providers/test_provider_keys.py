"""Which variable holds a model's key, and reading it without leaking it."""

from __future__ import annotations

import pytest

from providers.errors import AuthenticationError, ConfigError
from providers.keys import KeyVariablePolicy, key_env_var, resolve_api_key


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
    environ = {"GPT_4_KEY": "conventional", "SHARED_OPENAI_KEY": "named"}
    config = {"apiKeyEnv": "SHARED_OPENAI_KEY"}
    assert resolve_api_key("gpt-4", config, environ) == "named"


@pytest.mark.parametrize(
    "variable", ["API_KEY_PEPPER", "DB_CONNECTION_STRING", "HOME"]
)
def test_only_key_variables_may_hold_a_model_key(variable: str) -> None:
    environ = {variable: "a-secret-of-the-service"}
    with pytest.raises(ConfigError) as caught:
        resolve_api_key("gpt-4", {"apiKeyEnv": variable}, environ)
    assert caught.value.field == "apiKeyEnv"
    assert "_KEY" in str(caught.value)
    assert "a-secret" not in str(caught.value)


def test_an_allow_list_admits_other_names_but_never_reserved_ones() -> None:
    policy = KeyVariablePolicy(
        allowed=frozenset({"VENDOR_TOKEN", "ADMIN_API_KEY"}),
        reserved=frozenset({"ADMIN_API_KEY"}),
    )
    environ = {"VENDOR_TOKEN": "vendor", "ADMIN_API_KEY": "admin"}
    config = {"apiKeyEnv": "VENDOR_TOKEN"}
    assert resolve_api_key("m", config, environ, policy) == "vendor"
    with pytest.raises(ConfigError, match="ADMIN_API_KEY"):
        resolve_api_key("m", {"apiKeyEnv": "ADMIN_API_KEY"}, environ, policy)
    # The convention cannot reach a reserved name either.
    with pytest.raises(ConfigError, match="ADMIN_API_KEY"):
        resolve_api_key("admin-api", {}, environ, policy)


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
