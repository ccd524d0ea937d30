"""The ``metasync`` command line: the composition root of local runs.

metasync up [--host H] [--port P]        run the service locally
metasync admin create-client NAME        print new client credentials
metasync fake-provider [--port P] ...    run the fake provider server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from pipeline.clients import Client, ClientService, Quotas
from pipeline.logging import configure_logging
from pipeline.security import IssuedKey
from pipeline.settings import Settings, SettingsError
from pipeline.store import Store, create_mongo_client
from serve_app import batch_cli, optimize_cli
from serve_app.launcher import LocalStack, StackOptions
from serve_app.local_services import LocalDatabase
from serve_app.preflight import (
    PreflightError,
    check_database,
    check_models_file,
    check_port_free,
    one_line,
)
from serve_app.version import product_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metasync", description="Metasync: LLM jobs on Ray."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"metasync {product_version()}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the service locally")
    up.add_argument(
        "--host", default="127.0.0.1", help="the API's bind address"
    )
    up.add_argument(
        "--port", type=int, default=8001, help="the API's port (8001)"
    )
    up.add_argument(
        "--no-fake-provider",
        action="store_true",
        help="do not start the fake provider the demo models use",
    )
    up.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not serve the Ray dashboard",
    )
    up.add_argument(
        "--dashboard-port",
        type=int,
        default=8265,
        help="the Ray dashboard's port (8265)",
    )
    up.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the port Ray exports Prometheus metrics on (default: a "
        "free port, printed at start)",
    )
    up.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs Ray may use (default: all of this machine's)",
    )

    admin = commands.add_parser("admin", help="administration")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser(
        "create-client", help="register a client and print its key"
    )
    create.add_argument("name", help="the client's name")
    create.add_argument(
        "--requests-per-minute",
        type=int,
        default=None,
        help="API requests a minute (default: unlimited)",
    )
    create.add_argument(
        "--max-pending-items",
        type=int,
        default=None,
        help="items waiting or running at once (default: unlimited)",
    )
    create.add_argument(
        "--budget",
        type=float,
        default=None,
        help="spending limit in USD (default: none)",
    )

    optimize_cli.add_parser(commands)
    batch_cli.add_parser(commands)
    commands.add_parser(
        "fake-provider",
        help="run the fake provider server (options: fake-provider -h)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``sys.argv`` by default.

    Returns:
        The exit status.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fake-provider"]:
        from providers.fake.__main__ import main as fake_main

        return fake_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        return _fail(f"configuration error: {error}", 2)
    quiet = (
        args.command in ("optimize", "batch") and "LOG_LEVEL" not in os.environ
    )
    # The progress bar is these commands' output; logs that say nothing
    # wrong would only break it up.
    configure_logging("WARNING" if quiet else settings.log_level)
    try:
        if args.command == "up":
            _check_up(settings, args)
            return _up(settings, args)
        if args.command == "optimize":
            return optimize_cli.run(args)
        if args.command == "batch":
            return batch_cli.run(args)
        if settings.db_connection_string:
            check_database(settings.db_connection_string)
        return _create_client(settings, args)
    except PreflightError as error:
        return _fail(str(error), 2)
    except RuntimeError as error:
        return _fail(one_line(error), 1)


def _fail(message: str, status: int) -> int:
    print(f"metasync: {one_line(message)}", file=sys.stderr)
    return status


def _check_up(settings: Settings, args: argparse.Namespace) -> None:
    """What `up` needs, checked before it starts anything."""
    check_models_file(settings.models_file)
    check_port_free(args.host, args.port, "API")
    if not args.no_dashboard and args.dashboard_port:
        check_port_free("127.0.0.1", args.dashboard_port, "Ray dashboard")
    if args.metrics_port:
        check_port_free("127.0.0.1", args.metrics_port, "metrics")
    if settings.db_connection_string:
        check_database(settings.db_connection_string)


def _up(settings: Settings, args: argparse.Namespace) -> int:
    options = StackOptions(
        host=args.host,
        port=args.port,
        fake_provider=not args.no_fake_provider,
        dashboard=not args.no_dashboard,
        dashboard_port=args.dashboard_port,
        metrics_port=args.metrics_port,
        num_cpus=args.num_cpus,
    )
    stack = LocalStack(settings, options)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def catch_signals() -> None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    catch_signals()
    started = time.monotonic()
    try:
        _say(_banner_start(settings))
        stack.start()
        # ray.init installs its own SIGTERM handler (it dumps a trace and
        # exits at once): take the signals back for an orderly stop.
        catch_signals()
        _say(_banner_ready(settings, stack, time.monotonic() - started))
        stop.wait()
        _say("metasync: stopping…")
        return 0
    except RuntimeError as error:
        return _fail(one_line(error), 1)
    finally:
        stack.stop()


def _banner_start(settings: Settings) -> str:
    lines = [f"metasync: starting ({settings.environment})"]
    if not settings.db_connection_string:
        lines.append(
            "  no DB_CONNECTION_STRING: using the embedded database in "
            f"{settings.state_dir}/db"
        )
    if settings.generated_secrets:
        lines.append(
            "  generated development secrets ("
            + ", ".join(settings.generated_secrets)
            + f") in {settings.state_dir}/dev-secrets.json"
        )
    return "\n".join(lines)


def _banner_ready(settings: Settings, stack: LocalStack, took: float) -> str:
    lines = [
        f"metasync: ready in {took:.1f}s at {stack.url}",
        f"  API docs:  {stack.url}/docs (user {settings.docs_user!r})",
    ]
    if stack.options.dashboard:
        lines.append(
            f"  Ray dashboard: http://127.0.0.1:{stack.options.dashboard_port}"
        )
    if stack.metrics is not None:
        lines.append(
            f"  Prometheus metrics (names prefixed ray_): {stack.metrics.url}"
        )
    # Only secrets metasync made are shown: stdout often ends up in logs,
    # and the operator already knows the ones they supplied.
    own = settings.dev_file_secrets
    admin_key = settings.admin_api_key.get_secret_value()
    docs_secret = settings.docs_secret.get_secret_value()
    lines.append(
        "  development admin key (X-Admin-Key): " + admin_key
        if "ADMIN_API_KEY" in own
        else "  admin key (X-Admin-Key): the value of ADMIN_API_KEY"
    )
    lines.append(
        "  docs password: " + docs_secret
        if "DOCS_SECRET" in own
        else "  docs password: the value of DOCS_SECRET"
    )
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)


def _create_client(settings: Settings, args: argparse.Namespace) -> int:
    database = LocalDatabase(settings.state_dir)
    uri = settings.db_connection_string
    try:
        if not uri:
            uri = database.start()
        quotas = Quotas(
            max_pending_items=args.max_pending_items,
            requests_per_minute=args.requests_per_minute,
            budget=args.budget,
        )
        client, issued = asyncio.run(
            _register(settings, uri, args.name, quotas)
        )
    finally:
        database.stop()
    print(
        json.dumps(
            {
                "clientId": str(client.id),
                "name": client.name,
                "apiKey": issued.key,
                "note": "the key is shown once; store it now",
            },
            indent=2,
        )
    )
    return 0


async def _register(
    settings: Settings, uri: str, name: str, quotas: Quotas
) -> tuple[Client, IssuedKey]:
    store = Store(
        create_mongo_client(uri, app_name="metasync-cli"), settings.db_name
    )
    try:
        await store.ensure_indexes()
        service = ClientService(
            store, settings.api_key_pepper.get_secret_value()
        )
        return await service.create(name, quotas, actor="admin:cli")
    finally:
        await store.close()


if __name__ == "__main__":
    raise SystemExit(main())
