import json
import stat

import pytest

from pipeline.settings import SECRET_VARIABLES, Settings, SettingsError


def test_defaults_follow_the_seed(tmp_path):
    settings = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    assert settings.db_name == "metasync-dev"
    assert settings.docs_user == "user"
    assert settings.poll_interval == 10
    assert settings.max_items_per_batch == 50
    assert settings.num_llm_workers == 10
    assert settings.db_connection_string is None
    assert settings.environment == "development"


def test_development_generates_secrets_once_in_a_private_file(tmp_path):
    first = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    assert set(first.generated_secrets) == set(SECRET_VARIABLES)
    path = tmp_path / "dev-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert first.admin_api_key.get_secret_value() == stored["ADMIN_API_KEY"]

    second = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    assert second.generated_secrets == ()
    assert second.admin_api_key == first.admin_api_key
    assert second.api_key_pepper == first.api_key_pepper


def test_given_secrets_are_not_generated(tmp_path):
    settings = Settings.from_env(
        {"METASYNC_HOME": str(tmp_path), "ADMIN_API_KEY": "given-admin"}
    )
    assert settings.admin_api_key.get_secret_value() == "given-admin"
    assert "ADMIN_API_KEY" not in settings.generated_secrets


def _production(**extra):
    env = {
        "METASYNC_ENV": "production",
        "DB_CONNECTION_STRING": "mongodb://db.example:27017",
        "ADMIN_API_KEY": "a" * 32,
        "API_KEY_PEPPER": "p" * 32,
        "DOCS_SECRET": "d" * 32,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize(
    "missing",
    ["ADMIN_API_KEY", "API_KEY_PEPPER", "DOCS_SECRET", "DB_CONNECTION_STRING"],
)
def test_production_requires_each_secret_by_name(missing):
    with pytest.raises(SettingsError) as error:
        Settings.from_env(_production(**{missing: None}))
    assert error.value.variable == missing
    assert missing in str(error.value)


def test_production_rejects_short_secrets():
    with pytest.raises(SettingsError, match="API_KEY_PEPPER"):
        Settings.from_env(_production(API_KEY_PEPPER="short"))


def test_production_with_everything_given():
    settings = Settings.from_env(_production())
    assert settings.is_production
    assert settings.generated_secrets == ()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POLL_INTERVAL", "soon"),
        ("MAX_ITEMS_PER_BATCH", "0"),
        ("NUM_LLM_WORKERS", "-1"),
        ("MAX_ITEMS_PER_BATCH", "5000"),
        ("MAX_ITEMS_PER_JOB", "20000000"),
        ("METASYNC_ENV", "staging"),
        ("CACHE_TTL_SECONDS", "0"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path, variable, value):
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"METASYNC_HOME": str(tmp_path), variable: value})
    assert error.value.variable == variable


def test_numbers_are_parsed(tmp_path):
    settings = Settings.from_env(
        {
            "METASYNC_HOME": str(tmp_path),
            "POLL_INTERVAL": "2.5",
            "MAX_ITEMS_PER_BATCH": "20",
            "DB_NAME": "other",
            "CACHE_TTL_SECONDS": "3600",
        }
    )
    assert settings.cache_ttl_seconds == 3600
    assert settings.poll_interval == 2.5
    assert settings.max_items_per_batch == 20
    assert settings.db_name == "other"


def test_secrets_do_not_show_in_repr(tmp_path):
    settings = Settings.from_env(
        {"METASYNC_HOME": str(tmp_path), "ADMIN_API_KEY": "visible-admin"}
    )
    assert "visible-admin" not in repr(settings)


def test_the_connection_string_stays_out_of_the_settings_repr(tmp_path):
    settings = Settings.from_env(
        {
            "METASYNC_HOME": str(tmp_path),
            "DB_CONNECTION_STRING": "mongodb://u:hunter2-secret@db:27017",
        }
    )
    assert "hunter2-secret" not in repr(settings)
