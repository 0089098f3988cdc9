#!/usr/bin/env bash
# The Pushpin tests (tests/multiprocess/test_pushpin.py) run Debian's pushpin
# (with condure and zurl, its dependencies). Install it when missing and we
# are allowed to; the tests skip with a clear reason otherwise.
set -uo pipefail
if command -v pushpin >/dev/null 2>&1 && command -v condure >/dev/null 2>&1 && command -v zurl >/dev/null 2>&1; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Debian's pushpin for the Pushpin tests…"
  # policy-rc.d may forbid starting the packaged service: the tests start their own instance.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pushpin >/dev/null) \
    || echo "Could not install pushpin; the Pushpin tests will be skipped." >&2
else
  echo "No pushpin and no root to install it: the Pushpin tests will be skipped." >&2
fi
exit 0
