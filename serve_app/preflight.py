"""Checks ``metasync`` runs before it starts anything.

A bad setting, an unreachable database or a busy port is then one line
naming the cause, not a traceback from deep inside Ray or the driver.
"""

from __future__ import annotations

import socket
from pathlib import Path

#: How long the CLI waits for a database before saying it is unreachable.
DATABASE_CHECK_TIMEOUT_MS = 5000


class PreflightError(Exception):
    """Something the command needs is not there; the message says what."""


def one_line(error: BaseException | str) -> str:
    """An error message on a single line (YAML and pydantic use several)."""
    return " ".join(str(error).split())


def check_models_file(path: str) -> None:
    """The catalog seed file parses and every model in it is valid.

    Raises:
        PreflightError: Naming the file and what is wrong.
    """
    import yaml

    from pipeline.catalog import load_seed, validate_spec
    from pipeline.errors import ValidationFailed

    if not Path(path).exists():
        return  # the app starts with an empty catalog (and says so)
    try:
        for index, spec in enumerate(load_seed(path)):
            try:
                validate_spec(spec)
            except ValidationFailed as error:
                problem = error.errors[0]
                raise ValueError(
                    f"{path}: models[{index}] ({spec.name}): "
                    f"{problem['field']}: {problem['message']}"
                ) from None
    except yaml.YAMLError as error:
        raise PreflightError(
            f"invalid models file {path}: {one_line(error)}"
        ) from None
    except (OSError, ValueError) as error:
        text = one_line(error)
        if not text.startswith(path):
            text = f"{path}: {text}"
        raise PreflightError(f"invalid models file {text}") from None


def check_port_free(host: str, port: int, what: str) -> None:
    """Nothing listens on ``host:port`` yet.

    Raises:
        PreflightError: The port is in use (or cannot be bound).
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "in use" if error.errno == 98 else one_line(error)
            raise PreflightError(
                f"{what} port {port} on {host} is {reason}"
                if reason == "in use"
                else f"cannot bind the {what} port {port} on {host}: {reason}"
            ) from None


def database_hosts(uri: str) -> str:
    """The hosts of a MongoDB URI, without credentials.

    Raises:
        PreflightError: The URI is malformed.
    """
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(uri)
    except (InvalidURI, ConfigurationError, ValueError) as error:
        raise PreflightError(
            f"DB_CONNECTION_STRING is not a valid MongoDB URI: "
            f"{one_line(error)}"
        ) from None
    return ",".join(f"{host}:{port}" for host, port in parsed["nodelist"])


def check_database(uri: str) -> None:
    """The database answers a ping.

    Raises:
        PreflightError: The URI is malformed or nothing answers.
    """
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    hosts = database_hosts(uri)
    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(
            uri,
            serverSelectionTimeoutMS=DATABASE_CHECK_TIMEOUT_MS,
            connectTimeoutMS=DATABASE_CHECK_TIMEOUT_MS,
        ) as client:
            client.admin.command("ping")
    except PyMongoError as error:
        reason = type(error).__name__
        if "Timeout" in reason or "AutoReconnect" in reason:
            reason = "nothing answered within " + (
                f"{DATABASE_CHECK_TIMEOUT_MS / 1000:g}s"
            )
        else:
            reason = one_line(error)[:200]
        raise PreflightError(
            f"database unreachable at {hosts} (DB_CONNECTION_STRING): {reason}"
        ) from None
