"""Which code a process runs: the version carried by the actors' names.

Detached actors outlive the deployment that created them, so an actor's
name carries the version of the code it runs
(:mod:`pipeline.worker.names`): a deploy of other code creates actors
under new names, and retires the old ones (:mod:`pipeline.cluster.rollout`).

The version is ``METASYNC_CODE_VERSION`` when set (a deploy may pin it,
say to a commit, or change it to replace the actors without a code
change: new keys in their environment). Otherwise it is derived from
the installed code: the package version and a hash of the source of the
four packages. A hash, not only the package version, because a deploy
of changed code that forgot to bump the version must still replace
the actors; every node installs the same code, so every process derives
the same version.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pipeline.settings import PROJECT_ROOT, Settings

#: The packages whose source makes up the version.
PACKAGES = ("providers", "pipeline", "optimizer", "serve_app")
#: Hex digits of the source hash kept in the version.
HASH_DIGITS = 12


def code_version(settings: Settings) -> str:
    """The version of this process's code (see the module docstring)."""
    return settings.code_version or installed_code_version()


@lru_cache(maxsize=1)
def installed_code_version() -> str:
    """``<package version>-<hash of the packages' source>``."""
    try:
        package = version("metasync")
    except PackageNotFoundError:  # a checkout that was never installed
        package = "0"
    return f"{package}-{source_hash(PROJECT_ROOT)}"


def source_hash(root: Path) -> str:
    """A hash of every Python file of :data:`PACKAGES` under ``root``."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:HASH_DIGITS]
