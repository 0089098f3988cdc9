#!/usr/bin/env bash
# Build the TypeScript client into the reference SPA (examples/spa/lib/, not
# committed): the page loads it as ES modules, no bundler. Needs node + npm.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLIENT="$ROOT/clients/typescript"
LIB="$ROOT/examples/spa/lib"
if [ ! -d "$CLIENT/node_modules/openapi-fetch" ]; then
  (cd "$CLIENT" && npm ci --no-audit --no-fund --loglevel=error)
fi
(cd "$CLIENT" && npm run --silent build)
rm -rf "$LIB"
mkdir -p "$LIB/flex"
cp "$CLIENT"/dist/*.js "$LIB/flex/"
cp "$CLIENT/node_modules/openapi-fetch/dist/index.mjs" "$LIB/openapi-fetch.mjs"
