"""validate_config of every adapter names the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from providers.errors import ConfigError
from providers.fake import fake_model_config
from providers.registry import provider_class

URL = "http://127.0.0.1:9"

VALID: dict[str, dict[str, Any]] = {
    name: fake_model_config(name, "m", URL)
    for name in (
        "openai",
        "azure_openai",
        "azure_inference",
        "anthropic",
        "gemini",
    )
}
VALID["azure_openai_v1"] = {
    "endpoint": URL,
    "apiVersion": "v1",
    "modelId": "gpt-4o",
}


def adapter_of(case: str) -> str:
    return "azure_openai" if case == "azure_openai_v1" else case


@pytest.mark.parametrize("case", sorted(VALID))
def test_the_fake_configs_are_valid(case: str) -> None:
    provider_class(adapter_of(case))().validate_config(VALID[case])


BAD: list[tuple[str, dict[str, Any], str]] = [
    # Fields every adapter shares.
    *(
        (case, {"timeoutSeconds": 0}, "timeoutSeconds")
        for case in ("openai", "anthropic", "gemini", "azure_inference")
    ),
    ("openai", {"timeoutSeconds": "fast"}, "timeoutSeconds"),
    ("openai", {"auth": "maybe"}, "auth"),
    ("gemini", {"apiKeyEnv": "1BAD"}, "apiKeyEnv"),
    # Typos must not fall back to the vendor's default URL.
    ("openai", {"baseURL": "http://x"}, "baseURL"),
    ("anthropic", {"endpoint": URL}, "endpoint"),
    # Per adapter.
    ("openai", {"modelId": None}, "modelId"),
    ("openai", {"modelId": ""}, "modelId"),
    ("openai", {"baseUrl": "ftp://x"}, "baseUrl"),
    ("openai", {"maxTokensParam": "tokens"}, "maxTokensParam"),
    ("azure_openai", {"endpoint": None}, "endpoint"),
    ("azure_openai", {"endpoint": "not a url"}, "endpoint"),
    ("azure_openai", {"deployment": None}, "deployment"),
    ("azure_openai", {"apiVersion": None}, "apiVersion"),
    ("azure_openai", {"modelId": "gpt-4o"}, "modelId"),
    ("azure_openai_v1", {"deployment": "d"}, "deployment"),
    ("azure_openai_v1", {"modelId": None}, "modelId"),
    ("azure_inference", {"endpoint": None}, "endpoint"),
    ("azure_inference", {"modelId": 7}, "modelId"),
    ("anthropic", {"modelId": None}, "modelId"),
    ("anthropic", {"defaultMaxTokens": 0}, "defaultMaxTokens"),
    ("anthropic", {"defaultMaxTokens": 1.5}, "defaultMaxTokens"),
    ("gemini", {"baseUrl": "localhost:8799"}, "baseUrl"),
    ("gemini", {"modelId": None}, "modelId"),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD)
def test_a_bad_field_is_named(
    case: str, change: dict[str, Any], field: str
) -> None:
    config = {**VALID[case], **change}
    config = {k: v for k, v in config.items() if v is not None}
    provider = provider_class(adapter_of(case))()
    with pytest.raises(ConfigError) as caught:
        provider.validate_config(config)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert caught.value.provider == provider.name


def test_a_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError):
        provider_class("openai")().validate_config(["modelId"])  # type: ignore[arg-type]
