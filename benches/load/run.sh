#!/usr/bin/env bash
# Switchyard's load harness: one command, one machine.
#
#   bash benches/load/run.sh            # everything, prints markdown tables
#   PARTS=throughput bash benches/load/run.sh
#   PARTS=queueing DISTS=exp bash benches/load/run.sh
#   PARTS=logplex LINES=1000000 bash benches/load/run.sh
#
# It installs what it needs from Debian (nginx, haproxy, wrk, h2load,
# rsyslog), builds the release examples (the dyno server, the router
# launcher, the open-loop generator, the syslog sender and the counting
# syslog receiver) and the `switchyard` binary, then
# hands over to harness.py, which starts the dyno, Switchyard, nginx,
# HAProxy and rsyslog with equivalent generated configs on 127.0.0.1,
# interleaves the runs so machine drift cancels, and prints the tables that
# go into BENCHMARKS.md. Knobs (environment):
#   PARTS      throughput,queueing,logplex   which parts to run (add
#              `routers` for the many-router queueing scenario)
#   DURATION   10      seconds per throughput run
#   ROUNDS     3       interleaved rounds per throughput cell (median kept)
#   THREADS    "1 all" fairness settings (worker threads per proxy)
#   SCENARIOS  "keepalive big close https h2"
#   TARGETS    "direct serve switchyard nginx nginx-log haproxy"  throughput
#              targets: serve is the shipped `switchyard serve` (router lines
#              into logplex with a live tail and a TCP drain, /metrics scraped
#              every SCRAPE_S=15 s); switchyard is the data plane alone;
#              nginx-log is nginx writing its access log to a file
#   QDURATION  20      seconds per queueing run (after a 3 s warm-up)
#   MROUTERS   10      routers in the many-router scenario (each request to one
#              picked at random), MLOADS "0.85", MSEEDS "1 2 3" (arrival
#              sequences; every configuration runs each one)
#   LOADS      "0.5 0.7 0.85 0.95"
#   DISTS      "exp weibull"   service-time distributions (exp|pareto|weibull)
#   LINES      1000000 syslog lines per logplex run
#   LDRAINS    "1 10"  drains per app (Switchyard) / omfwd actions (rsyslog)
#   LCONNS     2       TCP connections the syslog sender spreads the lines over
#   MSG_BYTES  120     bytes of MSG per line
#   LTARGETS   "switchyard rsyslog"  (add `label=/path/to/switchyard` to compare
#              another build, e.g. a baseline, in the same rounds)
#   RSYSLOG_QUEUE direct  rsyslog actions run in the main queue's worker
#              (direct) or each on its own LinkedList queue (action)
#   OUT        a file to copy the markdown into
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# shellcheck source=benches/load/apt.sh
source "$ROOT/benches/load/apt.sh"
install_missing nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client \
    openssl:openssl rsyslogd:rsyslog

echo "building release examples" >&2
cargo build --release --example dyno --example bench_router --example openloop \
    --example syslog_blast --example syslog_sink --bin switchyard >&2

export SWITCHYARD_BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"
export PATH="$PATH:/usr/sbin:/sbin"
exec python3 "$ROOT/benches/load/harness.py" "$@"
