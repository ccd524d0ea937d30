"""Schemathesis hooks: the media types of this API it does not know.

Loaded by tests/contract/run.sh (``SCHEMATHESIS_HOOKS``).
"""

from typing import Any

import schemathesis

# POST /datasets also takes JSON lines: send the generated text as is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@schemathesis.deserializer("text/html", "application/x-ndjson")
def as_text(ctx: Any, response: Any) -> str:
    """The run report (HTML) and results as JSON lines, as text.

    The schema declares both as strings; this lets schemathesis check
    that instead of skipping them.
    """
    body: bytes = response.content
    return body.decode("utf-8")
