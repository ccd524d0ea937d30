"""The code version in actor names: derived, pinned, parsed back."""

import pytest

from pipeline.code_version import (
    HASH_DIGITS,
    PACKAGES,
    code_version,
    source_hash,
)
from pipeline.settings import Settings, SettingsError
from pipeline.worker.names import (
    UNVERSIONED,
    ActorName,
    coordinator_name,
    worker_name,
)


def _tree(root, text):
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "module.py").write_text(text)


def test_the_source_hash_changes_with_the_code(tmp_path):
    _tree(tmp_path, "x = 1\n")
    before = source_hash(tmp_path)
    assert source_hash(tmp_path) == before
    (tmp_path / "pipeline" / "module.py").write_text("x = 2\n")
    assert source_hash(tmp_path) != before


def test_a_pinned_version_wins_and_a_bad_one_is_named(tmp_path):
    env = {"METASYNC_HOME": str(tmp_path)}
    derived = code_version(Settings.from_env(env))
    package, _, digest = derived.rpartition("-")
    assert package and len(digest) == HASH_DIGITS
    pinned = Settings.from_env({**env, "METASYNC_CODE_VERSION": "git-1a2b"})
    assert code_version(pinned) == "git-1a2b"
    with pytest.raises(SettingsError, match="METASYNC_CODE_VERSION"):
        Settings.from_env({**env, "METASYNC_CODE_VERSION": "a/b"})
    with pytest.raises(SettingsError, match="WORKER_NUM_CPUS"):
        Settings.from_env({**env, "WORKER_NUM_CPUS": "-1"})


def test_actor_names_carry_and_give_back_their_version():
    worker = ActorName.parse(worker_name("azure_openai", 3, "0.1.0-abc"))
    assert worker is not None
    assert worker.version == "0.1.0-abc"
    assert worker.worker_slot() == ("azure_openai", 3)
    limits = ActorName.parse(coordinator_name("b"))
    assert limits is not None and not limits.is_worker
    assert limits.worker_slot() is None
    assert ActorName.parse("SERVE_CONTROLLER_ACTOR") is None
    # Names from before versions are retired like an old version.
    legacy = ActorName.parse("metasync-worker-openai-1")
    assert legacy is not None and legacy.version == UNVERSIONED
    assert legacy.worker_slot() == ("openai", 1)
    assert ActorName.parse("metasync-limits") is not None
    assert ActorName.parse("metasync-something") is None
