#!/usr/bin/env bash
# Spark 4 needs Java 17 or newer. Install it (Debian/Ubuntu, as root) when missing,
# otherwise stop with a message that says what to do.
set -euo pipefail

java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Java 17+ not found: installing openjdk-17-jre-headless with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  exit 0
fi
echo "ERROR: Spark needs Java 17 or newer on PATH (found: $(java -version 2>&1 | head -1 || echo none))." >&2
echo "Install it, e.g. 'sudo apt-get install openjdk-17-jre-headless', then re-run make." >&2
exit 1
