#!/usr/bin/env bash
# Two (or more) builds side by side: whether a change made a request
# cheaper, on a machine whose speed drifts from minute to minute. Each
# round runs every build in turn under the same load (wrk -t2 -c64,
# keep-alive, BODY_BYTES-byte responses from the load harness's dyno,
# DURATION seconds after a 1 s warm-up) and reads its CPU time and the
# whole machine's busy time from /proc, and wrk's p50 and p99; the medians
# over ROUNDS rounds are what to compare. Nothing is pinned: the builds
# share the two cores with wrk and the dyno, as in the load harness.
#
# A build is a data plane (examples/bench_router.rs), or `serve:PATH`: a
# `switchyard` binary run as `switchyard serve` the way the load harness
# runs it (one router thread, router lines into a live tail and a TCP
# syslog drain), loaded with the app's Host header, its CPU counting all
# its threads. `serve-tail:PATH`, `serve-drain:PATH` and `serve-none:PATH`
# run it with only that log consumer, or none (router lines still go into
# the app's channel and its history): what each consumer costs.
#
#   cp target/release/examples/bench_router /tmp/before   # at the old commit
#   cargo build --release --example bench_router           # at the new one
#   bash benches/load/ab.sh /tmp/before target/release/examples/bench_router
#   # the shipped binary against the data plane alone, interleaved:
#   bash benches/load/ab.sh target/release/examples/bench_router \
#       serve:target/release/switchyard
#
# Knobs: ROUNDS (6), DURATION (5), BODY_BYTES (13), CLOSE=1 (a new
# connection per request: wrk -c16 with `Connection: close`),
# DYNO_THREADS (1; the harness's dyno has one per CPU), SETSID=1 (each
# build in its own session, as the harness starts its proxies: with
# scheduler autogroups that is its own share of the CPU).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-6}"
DURATION="${DURATION:-5}"
BODY_BYTES="${BODY_BYTES:-13}"
LOAD=(-t2 -c64)
[[ ${CLOSE:-} == 1 ]] && LOAD=(-t2 -c16 -H "Connection: close")
if [[ $# -lt 2 ]]; then
    echo "usage: $0 BUILD_A BUILD_B [more builds]" >&2
    echo "       (a build: a bench_router binary, or serve:SWITCHYARD_BINARY)" >&2
    exit 2
fi
# Whether build $1 is run as `switchyard serve` (serve:PATH, serve-LOGS:PATH).
is_serve() { [[ $1 == serve:* || $1 == serve-*:* ]]; }

for b in "$@"; do
    path=$b
    is_serve "$b" && path=${b#*:}
    [[ -x $path ]] || {
        echo "$path: not an executable" >&2
        exit 2
    }
done

# shellcheck source=benches/load/apt.sh
source "$ROOT/benches/load/apt.sh"
install_missing wrk:wrk
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
build_release --example dyno --example syslog_sink

start_dyno "$BODY_BYTES"
SESSION=()
[[ ${SETSID:-} == 1 ]] && SESSION=(setsid)

RESULTS="$SCRATCH/ab.tsv"
for round in $(seq "$ROUNDS"); do
    for build in "$@"; do
        port=$(free_port)
        host=()
        if is_serve "$build"; then
            # serve-tail:PATH, serve-drain:PATH, serve-none:PATH: which of
            # the log consumers this one has (serve:PATH has both).
            logs="tail drain"
            if [[ $build == serve-*:* ]]; then
                logs=${build%%:*}
                logs=${logs#serve-}
            fi
            SERVE_LOGS=$logs SERVE_BIN=${build#*:} start_serve "$port" "$DYNO_PORT" "${SESSION[@]}"
            pid=$SERVE_PID
            host=(-H "Host: bench.localhost")
        else
            "${SESSION[@]}" "$build" --http "127.0.0.1:$port" --threads 1 --dyno "127.0.0.1:$DYNO_PORT" \
                --max-dyno-concurrency 10000 --max-in-flight 100000 >"$SCRATCH/router.log" 2>&1 &
            pid=$!
        fi
        wait_http "$port"
        wrk "${LOAD[@]}" "${host[@]}" -d1s "http://127.0.0.1:$port/" >/dev/null
        read -r u0 s0 < <(cpu_ticks "$pid")
        b0=$(busy)
        out=$(wrk "${LOAD[@]}" "${host[@]}" --latency -d"${DURATION}s" "http://127.0.0.1:$port/")
        read -r u1 s1 < <(cpu_ticks "$pid")
        b1=$(busy)
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        p50=$(wrk_ms 50 <<<"$out")
        p99=$(wrk_ms 99 <<<"$out")
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$build" "$round" "$requests" "$u0" "$s0" "$u1" "$s1" \
            "$p50" "$p99" "$b0" "$b1" >>"$RESULTS"
        echo "round $round: $build done" >&2
    done
done

python3 - "$RESULTS" "$DURATION" "$(getconf CLK_TCK)" "$@" <<'EOF'
import statistics, sys
path, duration, tck, builds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

rows = {}
for line in open(path):
    build, _, n, u0, s0, u1, s1, p50, p99, b0, b1 = line.rstrip("\n").split("\t")
    n = int(n)
    user = (int(u1) - int(u0)) / tck / n * 1e6
    kern = (int(s1) - int(s0)) / tck / n * 1e6
    machine = (int(b1) - int(b0)) / tck / n * 1e6
    rows.setdefault(build, []).append((n / duration, user + kern, user, kern, float(p50),
                                       float(p99), machine))
print("| build | req/s | CPU µs / request | user µs | kernel µs | p50 ms | p99 ms "
      "| machine CPU µs / request | vs first (req/s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
first = statistics.median(r[0] for r in rows[builds[0]])
for build in builds:
    r = rows[build]
    med = [statistics.median(x[i] for x in r) for i in range(7)]
    print(f"| {build} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | "
          f"{med[4]:.2f} | {med[5]:.2f} | {med[6]:.1f} | {med[0] / first:.3f}× |")
EOF
