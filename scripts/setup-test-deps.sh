#!/usr/bin/env bash
# Installs the real clients and peers the test suite talks to (curl, logger,
# openssl). Safe to run repeatedly; does nothing when all are present.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v logger >/dev/null || need+=(bsdutils)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing test tools: ${need[*]} (install them, then re-run)" >&2
    exit 1
  fi
fi
