#!/usr/bin/env bash
# Convergence of a cluster on one machine: etcd, two control nodes and
# three routers following etcd (see convergence.py for what is measured).
#
#   bash benches/cluster/run.sh            # CHANGES=1000 ROUTERS=3 CONTROLS=2
#
# Installs etcd (Debian etcd-server) and protoc when missing, builds the
# release binary (CARGO_TARGET_DIR is honoured) and runs the measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y etcd-server protobuf-compiler libprotobuf-dev
fi
cargo build --release --bin switchyard
target="${CARGO_TARGET_DIR:-target}"
python3 benches/cluster/convergence.py "$target/release/switchyard"
