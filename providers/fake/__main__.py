r"""The fake provider's command line: ``python -m providers.fake``.

``metasync fake-provider`` calls :func:`main`. Options set the default
behaviour of every model on top of an optional config file::

    python -m providers.fake --port 8799 --latency-ms 100-300 \
        --stream-tps 50 --fault rate_limit:0.05 --config fake.yaml

The simulated demo models of ``configs/models.yaml`` that need more than
an echo (:data:`DEMO_MODELS`: the prompt-optimization task, its control
and the meta model) are served with their simulation and a 20 ms latency
unless the config file names them too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .behaviour import FAULT_KINDS, BehaviourError
from .config import FakeConfig, load_config_file
from .server import DEFAULT_PORT, run

# Behaviours of the demo models keyed by their upstream model ids; short
# latencies so that a demo optimization run finishes in seconds.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "demo-task": {"simulate": "task", "latencyMs": 20},
    "demo-task-control": {"simulate": "control", "latencyMs": 20},
    "demo-meta": {"simulate": "meta", "latencyMs": 20},
}


def _latency(text: str) -> float | dict[str, float]:
    low, sep, high = text.partition("-")
    try:
        if sep:
            return {"min": float(low), "max": float(high)}
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MS or MIN-MAX, got {text!r}"
        ) from None


def _fault(text: str) -> dict[str, Any]:
    kind, sep, rate = text.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown fault {kind!r}; one of {', '.join(sorted(FAULT_KINDS))}"
        )
    if not sep:
        return {"kind": kind}
    try:
        return {"kind": kind, "rate": float(rate)}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KIND[:RATE], got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """Describe the command's options."""
    parser = argparse.ArgumentParser(
        prog="metasync fake-provider",
        description=(
            "Serve a fake LLM provider speaking the OpenAI, Azure OpenAI, "
            "Azure AI Inference, Anthropic and Gemini wire formats."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default 8799)"
    )
    parser.add_argument(
        "--config", metavar="PATH", help="YAML or JSON configuration file"
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        metavar="MS|MIN-MAX",
        help="default delay before each response",
    )
    parser.add_argument(
        "--first-byte-delay-ms",
        type=float,
        metavar="MS",
        help="default delay between the headers and the body",
    )
    parser.add_argument(
        "--stream-tps",
        type=float,
        metavar="TOKENS",
        help="default stream pace, tokens per second",
    )
    parser.add_argument("--reply", help="default answer (instead of echo)")
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND[:RATE]",
        help="default injected fault (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="seed for random behaviour")
    return parser


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the config file and the options into one document.

    Args:
        args: Parsed options.

    Returns:
        The configuration document.

    Raises:
        BehaviourError: The result is invalid.
        OSError: The config file cannot be read.
    """
    document = load_config_file(args.config) if args.config else {}
    default = dict(document.get("default") or {})
    options = {
        "latencyMs": args.latency_ms,
        "firstByteDelayMs": args.first_byte_delay_ms,
        "streamTokensPerSecond": args.stream_tps,
        "reply": args.reply,
    }
    default.update({k: v for k, v in options.items() if v is not None})
    if args.fault:
        default["faults"] = [*default.get("faults", []), *args.fault]
    document["default"] = default
    if args.seed is not None:
        document["seed"] = args.seed
    FakeConfig(document)  # validate now, with a clear message
    return document


def with_demo_models(document: Mapping[str, Any]) -> dict[str, Any]:
    """Add the :data:`DEMO_MODELS` a configuration document does not name.

    Args:
        document: A configuration document.

    Returns:
        A copy whose models are the demo models overlaid by the
        document's own.
    """
    models = {**DEMO_MODELS, **(document.get("models") or {})}
    return {**document, "models": models}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake provider server until interrupted.

    Args:
        argv: The arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0 after a clean stop, 2 for a bad configuration.
    """
    args = build_parser().parse_args(argv)
    try:
        document = with_demo_models(build_config(args))
    except (BehaviourError, OSError, ValueError) as exc:
        print(f"fake-provider: {exc}", file=sys.stderr)
        return 2
    run(
        args.host,
        args.port,
        document,
        on_ready=lambda url: print(
            f"fake provider serving on {url} (simulated models; no keys)",
            flush=True,
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
