"""Set the stage for tests/contract/run.sh: schema, client, resources.

Fetches the live ``/openapi.json`` (HTTP basic auth), registers a client
for schemathesis, and makes one resource of each kind it has ids for (a
finished job, a prompt, a dataset, an optimization run on the simulated
demo models), so the operations that take an id reach real documents
instead of answering 404 to every generated id. Writes their ids as
shell ``export`` lines to ``<work>/stage.env``.

Only the standard library: run.sh starts it with any Python 3.11.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

URL = os.environ["METASYNC_URL"].rstrip("/")
TIMEOUT_S = 30


def call(
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        URL + path,
        data=data,
        method=method,
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        raise SystemExit(f"{method} {path}: {error.code} {detail}") from None
    return json.loads(raw) if raw[:1] in (b"{", b"[") else raw


def wait_for(
    path: str, headers: dict[str, str], done: set[str], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        document: dict[str, Any] = call("GET", path, headers)
        counts = document.get("counts") or {}
        idle = counts.get("PENDING", 0) + counts.get("PROCESSING", 0) == 0
        if document["status"] in done and idle:
            return document
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not finish: {document}")
        time.sleep(0.25)


def main(work: str) -> None:
    basic = base64.b64encode(
        f"{os.environ['DOCS_USER']}:{os.environ['DOCS_SECRET']}".encode()
    ).decode()
    schema = call("GET", "/openapi.json", {"Authorization": f"Basic {basic}"})
    with open(f"{work}/openapi.json", "w") as out:
        json.dump(schema, out)

    admin = {"X-Admin-Key": os.environ["ADMIN_API_KEY"]}
    client = call("POST", "/admin/clients", admin, {"name": "schemathesis"})
    auth = {"Authorization": f"Bearer {client['apiKey']}"}

    def prompt(name: str) -> str:
        body = {
            "name": name,
            "systemPrompt": "Repeat the user.",
            "userTemplate": "Say {{word}}.",
        }
        return str(call("POST", "/prompts", auth, body)["id"])

    def job() -> str:
        items = [
            {"customId": "a", "model": "demo-openai", "userContent": "one"},
            {"customId": "b", "model": "demo-gemini", "userContent": "two"},
        ]
        created = call("POST", "/jobs", auth, {"items": items})
        done = {"PROCESSED", "FAILED"}
        wait_for(f"/jobs/{created['id']}", auth, done, timeout_s=120)
        return str(created["id"])

    examples = [
        {"inputs": {"input": f"What is {a} + {b}?"}, "expected": str(a + b)}
        for a, b in [(2, 3), (7, 5), (10, 4), (6, 6), (9, 1), (3, 8)]
    ]
    dataset = call("POST", "/datasets", auth, {"examples": examples})
    run = call(
        "POST",
        "/runs",
        auth,
        {
            "workingPrompts": [{"text": "You are a calculator."}],
            "datasetId": dataset["id"],
            "targetModel": "demo-task",
            "metaModel": "demo-meta",
            "minibatchSize": 2,
            "budget": {"iterations": 1, "candidatesPerIteration": 1},
        },
    )
    wait_for(
        f"/runs/{run['id']}",
        auth,
        {"SUCCEEDED", "FAILED", "CANCELED"},
        timeout_s=180,
    )
    stage = {
        "SCHEMATHESIS_CLIENT_ID": client["clientId"],
        "SCHEMATHESIS_CLIENT_KEY": client["apiKey"],
        "SCHEMATHESIS_JOB_ID": job(),
        "SCHEMATHESIS_DELETED_JOB_ID": job(),
        "SCHEMATHESIS_PROMPT_ID": prompt("schemathesis"),
        "SCHEMATHESIS_DELETED_PROMPT_ID": prompt("schemathesis-delete"),
        "SCHEMATHESIS_DATASET_ID": dataset["id"],
        "SCHEMATHESIS_RUN_ID": run["id"],
    }
    with open(f"{work}/stage.env", "w") as out:
        for name, value in stage.items():
            out.write(f"export {name}={value}\n")


if __name__ == "__main__":
    main(sys.argv[1])
