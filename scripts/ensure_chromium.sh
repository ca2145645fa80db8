#!/usr/bin/env bash
# The UI test (tests/test_ui.py) drives a real headless Chromium through the DevTools
# protocol. Install Debian's chromium (as root, with apt-get) when it is missing, otherwise
# say what to install. Nothing is downloaded at test time.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "chromium not found: installing it with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "ERROR: the UI test needs a Chromium browser (chromium on PATH)." >&2
echo "Install it, e.g. 'sudo apt-get install chromium', then re-run." >&2
exit 1
