import io
import json
import logging

import pytest

from pipeline.logging import (
    MAX_REMEMBERED_KEYS,
    REDACTED,
    BusinessLogger,
    SecretRedactor,
    bound_context,
    configure_logging,
    get_logger,
    redactor,
)
from pipeline.security import generate_client_key


def test_secret_fields_are_masked_whatever_their_spelling():
    clean = SecretRedactor()(
        None,
        "info",
        {
            "X-Admin-Key": "admin-secret",
            "api_key": "sk-123456789",
            "Authorization": "Bearer abc",
            "nested": {"apiKey": "k-12345678", "ok": "fine"},
            "inputTokens": 12,
            "event": "x",
        },
    )
    assert clean["X-Admin-Key"] == REDACTED
    assert clean["api_key"] == REDACTED
    assert clean["Authorization"] == REDACTED
    assert clean["nested"] == {"apiKey": REDACTED, "ok": "fine"}
    assert clean["inputTokens"] == 12


def test_secrets_inside_text_are_scrubbed():
    issued = generate_client_key()
    redact = SecretRedactor(["provider-key-value-123"])
    text = (
        f"key {issued.key} and Authorization: Bearer tok.en-1 and "
        "provider-key-value-123 in a url"
    )
    scrubbed = redact.scrub(text)
    assert issued.key not in scrubbed
    assert "tok.en-1" not in scrubbed
    assert "provider-key-value-123" not in scrubbed
    assert scrubbed.count(REDACTED) == 3


def test_secret_environment_values_are_registered():
    redact = SecretRedactor()
    redact.register_environment(
        {"GPT_4_KEY": "sk-live-abcdefgh", "DB_NAME": "metasync-dev-db"}
    )
    assert redact.scrub("sk-live-abcdefgh") == REDACTED
    assert redact.scrub("metasync-dev-db") == "metasync-dev-db"


def test_exceptions_are_scrubbed():
    redact = SecretRedactor(["hunter2-hunter2"])
    out = redact(None, "error", {"error": ValueError("pw hunter2-hunter2")})
    assert "hunter2" not in out["error"]


@pytest.fixture
def captured():
    stream = io.StringIO()
    configure_logging(
        "INFO", stream=stream, environ={"X_SECRET": "env-secret-1"}
    )
    yield stream
    configure_logging("INFO")


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_bound_context(captured):
    with bound_context(request_id="req-1", job_id="job-9"):
        get_logger("t").info("hello", items=3)
    BusinessLogger().log_operation("jobs", "create", job_id="j")
    first, second = _lines(captured)
    assert first["event"] == "hello"
    assert first["request_id"] == "req-1"
    assert first["job_id"] == "job-9"
    assert first["level"] == "info"
    assert "timestamp" in first
    assert second["service"] == "jobs"
    assert second["operation"] == "create"


def test_stdlib_logging_goes_through_redaction(captured):
    redactor.register("registered-secret-xyz")
    logging.getLogger("some.library").warning(
        "connecting with env-secret-1 and registered-secret-xyz"
    )
    (line,) = _lines(captured)
    assert "env-secret-1" not in line["event"]
    assert "registered-secret-xyz" not in line["event"]
    assert line["logger"] == "some.library"


def test_exception_tracebacks_are_scrubbed(captured):
    try:
        raise RuntimeError("failed with env-secret-1")
    except RuntimeError:
        get_logger("t").exception("boom")
    assert "env-secret-1" not in captured.getvalue()
    assert "RuntimeError" in captured.getvalue()


CONNECTION = "mongodb://metasync:pa55-w0rd-secret@db.example:27017/?tls=true"


def test_the_connection_string_and_its_password_are_redacted():
    redact = SecretRedactor()
    redact.register_environment({"DB_CONNECTION_STRING": CONNECTION})
    assert redact.scrub(f"connecting to {CONNECTION}") == (
        f"connecting to {REDACTED}"
    )
    # Drivers quote the parts of a URI, not always the whole of it.
    assert "pa55-w0rd-secret" not in redact.scrub(
        "auth failed for metasync with pa55-w0rd-secret"
    )
    clean = redact(None, "info", {"db_connection_string": "mongodb://h"})
    assert clean["db_connection_string"] == REDACTED


def test_authenticated_keys_are_redacted_and_their_number_bounded():
    redact = SecretRedactor(["process-secret-1"])
    for n in range(MAX_REMEMBERED_KEYS + 50):
        redact.remember_authenticated(f"authenticated-key-{n:05d}")
    latest = f"authenticated-key-{MAX_REMEMBERED_KEYS + 49:05d}"
    assert redact.scrub(latest) == REDACTED
    assert redact.scrub("authenticated-key-00000") == (
        "authenticated-key-00000"
    )
    assert redact.remembered == MAX_REMEMBERED_KEYS
    # The process's own secrets are never pushed out.
    assert redact.scrub("process-secret-1") == REDACTED
