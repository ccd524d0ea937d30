"""The registry: built-in names, plugins by entry point, clear failures."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from providers import registry
from providers.base import LLMProvider
from providers.errors import MissingDependencyError, UnknownProviderError
from providers.registry import get_provider, provider_class, provider_names

BUILTINS = ["anthropic", "azure_inference", "azure_openai", "gemini", "openai"]


def test_builtin_names_are_listed() -> None:
    assert set(BUILTINS) <= set(provider_names())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_load_and_are_cached_per_process(name: str) -> None:
    provider = get_provider(name)
    assert isinstance(provider, LLMProvider)
    assert provider.get_name() == name
    assert get_provider(name) is provider


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        get_provider("mistral-cloud")
    message = str(caught.value)
    assert "mistral-cloud" in message
    for name in BUILTINS:
        assert name in message


def test_importing_the_package_imports_no_sdk() -> None:
    code = (
        "import sys, providers;"
        "sdks = ['openai', 'anthropic', 'google.genai', 'azure.ai.inference'];"
        "print([s for s in sdks if s in sys.modules])"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "[]"


def test_missing_sdk_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry makes `import anthropic` fail as if it were absent.
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(MissingDependencyError) as caught:
        provider_class("anthropic")
    assert caught.value.package == "anthropic"
    assert "pip install anthropic" in str(caught.value)


def test_missing_nested_sdk_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.genai", None)
    with pytest.raises(MissingDependencyError) as caught:
        provider_class("gemini")
    assert caught.value.package == "google-genai"


def _install_plugin(root: Path, name: str, target: str, source: str) -> None:
    (root / "metasync_test_plugin.py").write_text(textwrap.dedent(source))
    dist = root / "metasync_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: metasync-test-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\n{name} = {target}\n"
    )


PLUGIN = """
    from providers.base import Completion, LLMProvider, Usage

    class EchoProvider(LLMProvider):
        name = "echo"

        def validate_config(self, config):
            pass

        async def complete(self, config, request, api_key):
            text = request.messages[-1].content
            return Completion(text, "stop", Usage(1, 1), "echo", 0.0)

    NOT_A_PROVIDER = object()
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "metasync_test_plugin", raising=False)
    monkeypatch.setattr(registry, "_instances", {})
    return tmp_path


@pytest.mark.anyio
async def test_an_entry_point_adds_a_provider(plugin_path: Path) -> None:
    _install_plugin(
        plugin_path, "echo", "metasync_test_plugin:EchoProvider", PLUGIN
    )
    assert "echo" in provider_names()
    provider = get_provider("echo")
    assert provider.get_name() == "echo"
    from providers.base import CompletionRequest

    request = CompletionRequest.from_prompts(None, "hi")
    assert (await provider.complete({}, request, None)).text == "hi"


def test_an_entry_point_that_is_no_provider_is_refused(
    plugin_path: Path,
) -> None:
    _install_plugin(
        plugin_path, "broken", "metasync_test_plugin:NOT_A_PROVIDER", PLUGIN
    )
    with pytest.raises(TypeError, match="not an LLMProvider"):
        get_provider("broken")
