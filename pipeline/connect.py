"""Joining the service from a driver script: its database and Ray cluster.

Offline batches and optimization drivers run on the cluster named by
``RAY_ADDRESS``, else the one ``metasync up`` runs on this machine, with
the database of ``DB_CONNECTION_STRING``, else the one ``metasync up``
started.
"""

from __future__ import annotations

import os

from pipeline.local_database import running_uri
from pipeline.settings import Settings


def local_settings(other_ways: str = "") -> Settings:
    """This process's settings, with the local service's database.

    Args:
        other_ways: More ways to name a service, for the error message
            (e.g. ``", or give --url"``).

    Raises:
        RuntimeError: No database is configured or running.
    """
    settings = Settings.from_env()
    if settings.db_connection_string:
        return settings
    uri = running_uri(settings.state_dir)
    if uri is None:
        raise RuntimeError(
            "no service to run on: start it with `metasync up`, or set "
            "DB_CONNECTION_STRING (and RAY_ADDRESS)" + other_ways
        )
    # Worker actors the driver may create read their own environment.
    os.environ["DB_CONNECTION_STRING"] = uri
    return settings.with_overrides(db_connection_string=uri)


def join_ray(settings: Settings) -> None:
    """Join ``RAY_ADDRESS``, or the local service's cluster."""
    import ray

    from pipeline.cluster.runtime import init_local_ray

    if ray.is_initialized():
        return
    init_local_ray(
        settings.state_dir,
        address=os.environ.get("RAY_ADDRESS") or "auto",
        namespace=settings.ray_namespace,
        log_to_driver=False,
    )
