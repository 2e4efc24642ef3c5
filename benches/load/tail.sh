#!/usr/bin/env bash
# Tail latency: each proxy on a core of its own, the load and the dyno on
# the other, so that what shows in p90 and p99 is the proxy's own
# scheduling rather than the machine's. On two shared cores (the load
# harness) a proxy's p99 is mostly how often the OS put it aside.
#
#   bash benches/load/tail.sh                       # switchyard, serve, haproxy, nginx
#   TARGETS="switchyard haproxy" ROUNDS=5 bash benches/load/tail.sh
#
# Each round runs every target in turn, pinned with `taskset` to CPU 0
# (all its threads; `serve`'s logplex threads too), with wrk and the dyno
# pinned to CPU 1, in two modes: keep-alive (wrk -t2 -c64) and a new
# connection per request (wrk -t2 -c16, `Connection: close`), DURATION
# seconds each after a WARMUP-second warm-up. Reported: medians over the ROUNDS
# rounds of req/s, the target's CPU per request (all its threads, from
# /proc) and wrk's p50, p90 and p99. `serve` is the shipped binary as the
# load harness runs it (its tail's reader and drain's receiver pinned to
# CPU 1); `switchyard` is the data plane alone.
# Knobs: TARGETS, ROUNDS (3), DURATION (5), BODY_BYTES (13), MODES ("keep
# close", in that order on each fresh process), WARMUP (1 s; 0 measures a
# process's first burst of connections), BENCH_ROUTER
# (another build of examples/bench_router to run as `switchyard`, e.g. an
# older commit's, for a before-and-after).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGETS="${TARGETS:-switchyard serve haproxy nginx}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
BODY_BYTES="${BODY_BYTES:-13}"
MODES="${MODES:-keep close}"
WARMUP="${WARMUP:-1}"

if [[ $(nproc) -lt 2 ]]; then
    echo "tail.sh needs two CPUs (the proxy on one, the load on the other)" >&2
    exit 2
fi

# shellcheck source=benches/load/apt.sh
source "$ROOT/benches/load/apt.sh"
install_missing wrk:wrk haproxy:haproxy nginx:nginx-light
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
build_release --example dyno --example syslog_sink --example bench_router --bin switchyard

start_dyno "$BODY_BYTES"
start_sink
# The dyno and the drain's receiver share the load's core.
for p in $(pgrep -f "dyno --port $DYNO_PORT") "$SINK_PID"; do
    taskset -a -cp 1 "$p" >/dev/null
done

RESULTS="$SCRATCH/tail.tsv"
for round in $(seq "$ROUNDS"); do
    for target in $TARGETS; do
        port=$(free_port)
        start_target "$target" "$port"
        pid=$TPID
        taskset -a -cp 0 "$pid" >/dev/null
        host=()
        if [[ $target == serve ]]; then
            host=(-H "Host: bench.localhost")
            # The live tail's reader is the load's, not the proxy's.
            for p in $(pgrep -f "curl -sN" || true); do taskset -a -cp 1 "$p" >/dev/null; done
        fi
        wait_http "$port"
        for mode in $MODES; do
            load=(-t2 -c64)
            [[ $mode == close ]] && load=(-t2 -c16 -H "Connection: close")
            if [[ $WARMUP != 0 ]]; then
                taskset -c 1 wrk "${load[@]}" "${host[@]}" -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null
            fi
            read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
            out=$(taskset -c 1 wrk "${load[@]}" "${host[@]}" --latency -d"${DURATION}s" \
                "http://127.0.0.1:$port/")
            read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$mode" "$round" \
                "$requests" "$((u1 + s1 - u0 - s0))" "$(wrk_ms 50 <<<"$out")" \
                "$(wrk_ms 90 <<<"$out")" "$(wrk_ms 99 <<<"$out")" \
                "$u0" "$s0" "$DURATION" >>"$RESULTS"
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "round $round: $target done" >&2
    done
done

python3 - "$RESULTS" "$(getconf CLK_TCK)" $TARGETS <<'EOF'
import statistics, sys
path, tck, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

rows = {}
for line in open(path):
    target, mode, _, n, ticks, p50, p90, p99, _, _, duration = line.rstrip("\n").split("\t")
    n = int(n)
    rows.setdefault((mode, target), []).append(
        (n / float(duration), int(ticks) / tck / n * 1e6, float(p50), float(p90), float(p99)))
for mode, title in (("keep", "keep-alive, wrk -t2 -c64"),
                    ("close", "a new connection per request, wrk -t2 -c16")):
    if not any(m == mode for m, _ in rows):
        continue
    print(f"\n{title}\n")
    print("| target | req/s | CPU µs / request | p50 ms | p90 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        runs = rows.get((mode, target), [])
        if not runs:
            continue
        med = [statistics.median(r[i] for r in runs) for i in range(5)]
        print(f"| {target} | {med[0]:,.0f} | {med[1]:.1f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} |")
EOF
