#!/usr/bin/env bash
# Schemathesis against a running service's live /openapi.json: zero 5xx,
# every response as the schema declares it. Bounded (-n per operation and
# an outer timeout per run) and seeded (schemathesis.toml).
#
# Needs: METASYNC_URL, ADMIN_API_KEY, DOCS_SECRET (and DOCS_USER unless it
# is "user"). Optional: SCHEMATHESIS_MAX_EXAMPLES (default 20),
# SCHEMATHESIS_TIMEOUT (seconds per run, default 600),
# SCHEMATHESIS (the command, default: schemathesis beside this repo's
# .venv python, else on PATH).
#
# Point it at a throwaway service (.ci/run starts one): the admin
# operations delete catalog models, the demo ones included, and
# deactivate clients.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${METASYNC_URL:?the service URL, e.g. http://127.0.0.1:8001}"
: "${ADMIN_API_KEY:?}" "${DOCS_SECRET:?}"
export DOCS_USER="${DOCS_USER:-user}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
limit="${SCHEMATHESIS_TIMEOUT:-600}"
if [[ -z "${SCHEMATHESIS:-}" ]]; then
    if [[ -x "$repo/.venv/bin/schemathesis" ]]; then
        SCHEMATHESIS="$repo/.venv/bin/schemathesis"
    else
        SCHEMATHESIS=schemathesis
    fi
fi
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python=python3

work="$(mktemp -d "${TMPDIR:-/tmp}/metasync-schemathesis-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The live description, a client of our own, and resources for the
# operations that take an id (prepare.py says which).
"$python" "$here/prepare.py" "$work"
# shellcheck source=/dev/null
source "$work/stage.env"

export SCHEMATHESIS_HOOKS="$here/hooks.py"

run() {
    local name="$1"
    shift
    echo "== schemathesis: $name"
    timeout --signal=TERM --kill-after=30 "$limit" \
        "$SCHEMATHESIS" --config-file "$here/schemathesis.toml" run \
        "$work/openapi.json" --url "$METASYNC_URL" \
        --max-examples "$max_examples" --no-color "$@"
}

# Two runs, so the admin operations (which may deactivate clients or
# rotate their keys, ours among them) cannot pull the client's
# credentials from under the client operations.
run "client operations" --exclude-path-regex '^/admin/'
# PUT /admin/models/{name} is left out: with a generated config it would
# point a live model (a demo model a run may still be using) at a
# generated host, and this machine must send nothing off it. The Bruno
# collection covers it.
run "admin operations" --include-path-regex '^/admin/' \
    --exclude-operation-id replace_model_admin_models__name__put
