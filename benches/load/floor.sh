#!/usr/bin/env bash
# Where a proxy's time goes per request, split into kernel and user space:
# the floor any proxy on kernel sockets pays, and what is left above it.
#
#   bash benches/load/floor.sh                  # serve, switchyard, haproxy, nginx
#   TARGETS="serve haproxy" DURATION=8 bash benches/load/floor.sh
#
# Each target serves wrk (-t2 -c64, keep-alive, 13-byte responses from the
# load harness's dyno) for DURATION seconds; its process's utime and stime
# (all threads, from /proc) and its system calls (`perf stat -e
# raw_syscalls:sys_enter`, when perf can) are divided by the requests
# served. `serve` is the shipped binary as the harness runs it: one router
# thread, its router lines into logplex with a live tail (`curl -N`) and a
# TCP syslog drain being read; `switchyard` is the data plane alone
# (examples/bench_router.rs, router lines formatted and dropped).
# PROTO=h2 loads each target with h2load instead (-t2 -c16 -m16, cleartext
# HTTP/2 with prior knowledge, as the harness's HTTP/2 table without TLS);
# the dyno behind every proxy still speaks HTTP/1.1.
# PROFILE=dir also samples each target with `perf record` (kernel and user
# space) into dir/<target>.data, for `perf report -i dir/<target>.data
# --sort sym`: where the kernel time of one proxy differs from another's.
# The last column is the whole machine's busy CPU (every process and
# interrupt, from /proc/stat) a request: on two shared cores it, more than
# the proxy's own time, is what sets how many requests a second each
# target serves, since the load generator, the dyno and, for `serve`, the
# drain's sink and the tail's reader run beside the proxy. BYPROC=1 also
# splits that column by process name (µs a request each), on standard
# error; what no running process accounts for is the load generator's
# (it has exited by then) and interrupts'. SERVE_LOGS ("tail drain") picks
# `serve`'s log consumers: `tail`, `drain`, or `none`. BODY_BYTES (13)
# sets the dyno's response size (65536 for the harness's 64 KiB table), and
# CLOSE=1 opens a new connection per request (wrk -c16 with `Connection:
# close`, as the harness's table of that name), so each of the harness's
# HTTP/1.1 tables has a floor.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGETS="${TARGETS:-serve switchyard haproxy nginx}"
DURATION="${DURATION:-5}"
PROTO="${PROTO:-h1}"
BODY_BYTES="${BODY_BYTES:-13}"
WRK=(-t2 -c64)
[[ ${CLOSE:-} == 1 ]] && WRK=(-t2 -c16 -H "Connection: close")

# shellcheck source=benches/load/apt.sh
source "$ROOT/benches/load/apt.sh"
install_missing wrk:wrk h2load:nghttp2-client haproxy:haproxy nginx:nginx-light
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
build_release --example dyno --example syslog_sink --example bench_router --bin switchyard
use_proto "$PROTO"

start_dyno "$BODY_BYTES"

# Every process's name and CPU time (utime + stime, clock ticks), one
# "pid name ticks" line each, into file $1.
by_process() {
    python3 - "$1" <<'EOF'
import glob, sys
with open(sys.argv[1], "w") as out:
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(path).read()
        except OSError:
            continue
        pid, rest = text.split(" (", 1)
        name, fields = rest.rsplit(") ", 1)
        f = fields.split()
        out.write(f"{pid} {name.replace(' ', '_')} {int(f[11]) + int(f[12])}\n")
EOF
}

# Loads port $1 for $2 seconds (the rest of the arguments go to the load
# generator); prints the requests answered.
load() {
    local port=$1 secs=$2 out="$SCRATCH/load.out"
    shift 2
    if [[ $PROTO == h2 ]]; then
        h2load -t2 -c16 -m16 -D "$secs" "$@" "http://127.0.0.1:$port/" >"$out"
        awk '/^requests:/ {print $8}' "$out"
    else
        wrk "${WRK[@]}" -d"${secs}s" "$@" "http://127.0.0.1:$port/" >"$out"
        awk '/requests in/ {print $1}' "$out"
    fi
}

echo "| target | req/s | CPU µs / request | user µs | kernel µs | kernel share | system calls / request | machine CPU µs / request |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
TCK=$(getconf CLK_TCK)
for target in $TARGETS; do
    port=$(free_port)
    start_target "$target" "$port"
    pid=$TPID
    wait_http "$port" "${CURL_PROTO[@]}"
    host=()
    if [[ $target == serve ]]; then
        host=(-H "Host: bench.localhost")
        [[ $PROTO == h2 ]] && host=(-H ":authority: bench.localhost")
    fi
    load "$port" 1 "${host[@]}" >/dev/null
    read -r u0 s0 < <(cpu_ticks "$pid")
    b0=$(busy)
    [[ -n ${BYPROC:-} ]] && by_process "$SCRATCH/procs.0"
    perf_out="$SCRATCH/perf.$target"
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$perf_out" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    record_pid=
    if [[ -n ${PROFILE:-} ]]; then
        mkdir -p "$PROFILE"
        perf record -q -g -F 2999 -p "$pid" -o "$PROFILE/$target.data" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        record_pid=$!
    fi
    requests=$(load "$port" "$DURATION" "${host[@]}")
    b1=$(busy)
    [[ -n ${BYPROC:-} ]] && by_process "$SCRATCH/procs.1"
    wait "$perf_pid" 2>/dev/null || true
    [[ -n $record_pid ]] && { wait "$record_pid" 2>/dev/null || true; }
    read -r u1 s1 < <(cpu_ticks "$pid")
    syscalls=$(awk -F, '/raw_syscalls/ {print $1}' "$perf_out" 2>/dev/null || true)
    python3 - "$target" "$requests" "$DURATION" "$TCK" "$u0" "$s0" "$u1" "$s1" "$b0" "$b1" "${syscalls:-}" <<'EOF'
import sys
target, n, d, tck, u0, s0, u1, s1, b0, b1, sc = sys.argv[1:]
n, d, tck = int(n), float(d), int(tck)
user = (int(u1) - int(u0)) / tck / n * 1e6
kern = (int(s1) - int(s0)) / tck / n * 1e6
calls = f"{int(sc) / n:.2f}" if sc.strip().isdigit() else "—"
machine = (int(b1) - int(b0)) / tck / n * 1e6
print(f"| {target} | {n / d:,.0f} | {user + kern:.1f} | {user:.1f} | {kern:.1f} | "
      f"{kern / (user + kern):.0%} | {calls} | {machine:.1f} |")
EOF
    if [[ -n ${BYPROC:-} ]]; then
        python3 - "$SCRATCH/procs.0" "$SCRATCH/procs.1" "$requests" "$TCK" "$target" \
            "$((b1 - b0))" <<'EOF' >&2
import collections, sys
before = {l.split()[0]: int(l.split()[2]) for l in open(sys.argv[1])}
spent = collections.Counter()
for line in open(sys.argv[2]):
    pid, name, ticks = line.split()
    spent[name] += int(ticks) - before.get(pid, 0)
n, tck, machine = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
us = lambda ticks: f"{ticks / tck / n * 1e6:.1f}"
parts = [f"{name} {us(t)}" for name, t in spent.most_common() if t > 0]
rest = machine - sum(spent.values())
print(f"{sys.argv[5]}, µs a request by process: " + ", ".join(parts)
      + f"; load generator and interrupts {us(rest)}")
EOF
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
