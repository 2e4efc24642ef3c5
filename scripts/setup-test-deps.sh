#!/usr/bin/env bash
# Installs the real clients and peers the test suite talks to (curl, logger,
# openssl, etcd, pebble) and what the build needs (protoc and Google's well-known
# .proto files, for etcd-client's generated gRPC code). Safe to run
# repeatedly; does nothing when all are present.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v logger >/dev/null || need+=(bsdutils)
command -v openssl >/dev/null || need+=(openssl)
command -v promtool >/dev/null || need+=(prometheus)   # promtool lints the /metrics scrape
command -v etcd >/dev/null || need+=(etcd-server)      # the etcd store's tests start a real one
command -v etcdctl >/dev/null || need+=(etcd-client)   # ... and compact it from outside
command -v pebble >/dev/null || need+=(pebble)           # a real ACME CA for automated certificates
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "missing test tools: ${need[*]} (install them, then re-run)" >&2
    exit 1
  fi
fi

# The heroku CLI (npm package `heroku`, pinned) for the control plane's
# end-to-end test, installed under target/npm so `cargo clean` removes it and
# CI can cache it. Skipped when that exact version is already there.
HEROKU_CLI_VERSION=11.10.0
npm_dir="$(cd "$(dirname "$0")/.." && pwd)/target/npm"
installed="$(node -p "require('$npm_dir/node_modules/heroku/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$HEROKU_CLI_VERSION" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    else
      echo "missing test tools: nodejs npm (install them, then re-run)" >&2
      exit 1
    fi
  fi
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "heroku@$HEROKU_CLI_VERSION"
fi
