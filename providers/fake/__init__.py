"""A fake LLM provider server speaking every supported vendor's wire format.

Tests, benchmarks and local demos point the real SDKs at it: OpenAI,
Azure OpenAI (deployments and the Foundry v1 endpoint), Azure AI
Inference, Anthropic and Gemini, streaming or not, with usage. Per model
it can be given latency, stream pacing, deterministic answers and injected
faults, and it records what it saw (``GET /_fake/stats``). See
:mod:`providers.fake.behaviour` for the behaviour fields and
:mod:`providers.fake.config` for the configuration document.

Start it with ``python -m providers.fake --port 8799`` (the ``metasync
fake-provider`` command), or in-process with :class:`FakeProviderServer`.
"""

from .behaviour import Behaviour, BehaviourError, Fault
from .config import FakeConfig, load_config_file
from .server import DEFAULT_PORT, FakeProviderServer, fake_model_config, run

__all__ = [
    "DEFAULT_PORT",
    "Behaviour",
    "BehaviourError",
    "FakeConfig",
    "FakeProviderServer",
    "Fault",
    "fake_model_config",
    "load_config_file",
    "run",
]
