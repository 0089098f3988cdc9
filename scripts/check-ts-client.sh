#!/usr/bin/env bash
# Fails when the committed TypeScript client no longer matches the server's
# OpenAPI schema, then runs the client's own tests (Node's test runner).
# Fix a reported diff with: scripts/generate-ts-client.sh (and commit it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLIENT="$ROOT/clients/typescript"
if ! command -v node >/dev/null 2>&1; then
  echo "node is not installed: skipping the TypeScript client checks." >&2
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
bash "$ROOT/scripts/generate-ts-client.sh" "$TMP/schema.d.ts"
if ! diff -u "$CLIENT/src/schema.d.ts" "$TMP/schema.d.ts" >"$TMP/diff"; then
  cat "$TMP/diff"
  echo "clients/typescript/src/schema.d.ts is out of date with the OpenAPI schema:" \
       "run scripts/generate-ts-client.sh and commit the result." >&2
  exit 1
fi
(cd "$CLIENT" && npm test --silent)
