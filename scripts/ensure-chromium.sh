#!/usr/bin/env bash
# The browser tests (tests/browser) drive Debian's chromium with Playwright; no browser is ever
# downloaded. Install it from apt when it is missing (a no-op when already installed).
set -euo pipefail
CHROMIUM="${CMDSEG_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the browser tests need Chromium at $CHROMIUM (or set CMDSEG_CHROMIUM); install your system's chromium package" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian's chromium for the browser tests (apt-get install chromium)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
