#!/usr/bin/env bash
# Regenerate the TypeScript client's types (clients/typescript/src/schema.d.ts)
# from the server's current OpenAPI schema (`manage.py spectacular`).
# Usage: scripts/generate-ts-client.sh [OUTPUT_FILE]  (default: the committed file)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLIENT="$ROOT/clients/typescript"
OUT="${1:-$CLIENT/src/schema.d.ts}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if [ ! -x "$CLIENT/node_modules/.bin/openapi-typescript" ]; then
  (cd "$CLIENT" && npm ci --no-audit --no-fund --loglevel=error)
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# The schema does not depend on the database or the environment; FLEX_TESTING
# keeps the settings quiet.
(cd "$ROOT" && FLEX_TESTING=1 "$PY" manage.py spectacular --format openapi-json --file "$TMP/openapi.json" 2>"$TMP/warnings")
(cd "$CLIENT" && ./node_modules/.bin/openapi-typescript "$TMP/openapi.json" --output "$OUT" >/dev/null)
