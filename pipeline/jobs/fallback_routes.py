"""A job's fallback routes: where each model's items go while it is down.

The routes are fixed when the job is submitted, from the catalog's
``fallbacks`` of the models it uses (only active models, in the order
the catalog names them), so the job's ``providers`` (which workers track
it) include every provider an item may move to, and a later catalog
change does not reroute a running job. A job submitted with
``fallbacks: false`` has none.

Stored on the job as ``fallbackRoutes``: a list of ``{"model": name,
"to": [{"model": name, "provider": name}, ...]}`` (a list, not a
mapping: model names may hold dots, which field names may not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog import ModelCatalog


@dataclass(frozen=True)
class Route:
    """One fallback of a model: the model and who serves it."""

    model: str
    provider: str


#: Per model, its fallbacks in order.
Routes = Mapping[str, tuple[Route, ...]]


async def resolve_routes(
    catalog: ModelCatalog, declared: Mapping[str, Sequence[str]]
) -> dict[str, tuple[Route, ...]]:
    """The routes of a job from its models' declared fallbacks.

    Fallbacks that are no longer active catalog models are left out.

    Args:
        catalog: The model catalog.
        declared: Per model used, the fallbacks its entry names.

    Returns:
        Per model with at least one active fallback, its routes.
    """
    wanted = {name for names in declared.values() for name in names}
    if not wanted:
        return {}
    found = await catalog.by_names(wanted)
    routes = {
        model: tuple(
            Route(name, found[name]["provider"])
            for name in names
            if name in found and name != model
        )
        for model, names in declared.items()
    }
    return {model: chain for model, chain in routes.items() if chain}


def route_providers(routes: Routes) -> set[str]:
    """Every provider an item of the job may move to."""
    return {route.provider for chain in routes.values() for route in chain}


def routes_to_doc(routes: Routes) -> list[dict[str, Any]]:
    """The stored form (module docstring)."""
    return [
        {
            "model": model,
            "to": [{"model": r.model, "provider": r.provider} for r in chain],
        }
        for model, chain in sorted(routes.items())
    ]


def routes_from_doc(
    doc: Iterable[Mapping[str, Any]] | None,
) -> dict[str, tuple[Route, ...]]:
    """Read the stored form (None or absent: no routes)."""
    return {
        entry["model"]: tuple(
            Route(r["model"], r["provider"]) for r in entry.get("to") or ()
        )
        for entry in doc or ()
    }
