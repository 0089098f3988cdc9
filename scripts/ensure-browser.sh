#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (never
# `playwright install`). Install it when missing and we are allowed to.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Debian's chromium for the browser tests…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Could not install chromium; browser tests will be skipped." >&2
else
  echo "No /usr/bin/chromium and no root to install it: browser tests will be skipped." >&2
fi
exit 0
