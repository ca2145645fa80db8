#!/usr/bin/env bash
# The tests start a throwaway PostgreSQL server (initdb + pg_ctl; tests/pg.py). Install the
# server binaries (Debian/Ubuntu, as root) when missing, otherwise say what to install.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "PostgreSQL server binaries not found: installing postgresql with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "ERROR: the PostgreSQL tests need the server binaries (/usr/lib/postgresql/*/bin/initdb)." >&2
echo "Install them, e.g. 'sudo apt-get install postgresql', then re-run." >&2
exit 1
