#!/usr/bin/env bash
# Installs Debian's prometheus server when it is missing and we can (root).
# Tests that scrape real endpoints need it; in CI (CI=true) a missing server is an error.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a system service on boot; our tests run their own server.
  command -v systemctl >/dev/null 2>&1 && systemctl disable --now prometheus >/dev/null 2>&1 || true
  exit 0
fi
echo "prometheus is missing and cannot be installed here (not root or no apt-get)." >&2
if [ "${CI:-}" = "true" ]; then exit 1; fi
echo "Tests that need a Prometheus server will be skipped." >&2
