"""The product's version: one source, the installed package's metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def product_version() -> str:
    """The version of the installed ``metasync`` package (pyproject)."""
    try:
        return version("metasync")
    except PackageNotFoundError:  # run from a checkout never installed
        return "0+unknown"
