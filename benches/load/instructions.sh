#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a
# number that does not move with machine load, so a change to the request
# path can be judged on a busy 2-core box where req/s swings ±20 %.
#
#   bash benches/load/instructions.sh            # serve, switchyard and nginx
#   TARGETS=switchyard bash benches/load/instructions.sh
#
# Each target runs under `valgrind --tool=callgrind` twice, serving N1 and
# then N2 keep-alive requests (h2load --h1, 8 connections) for a 13-byte
# (BODY_BYTES) body from the load harness's dyno; (Ir(N2) - Ir(N1)) / (N2 - N1) is the
# cost of one request with start-up and shutdown cancelled out. Kernel work
# (the system calls themselves) is not counted: it is about the same for
# every proxy here (two reads and two writes a request), see BENCHMARKS.md.
# `serve` is the shipped binary (`switchyard serve --router-threads 1`, one
# app on `bench.localhost`, its router lines into logplex with one live
# tail and one TCP syslog drain being read); `switchyard` is the data plane
# alone (examples/bench_router.rs, router lines formatted and dropped).
# Start-up work that runs for a stretch of wall-clock time rather than a
# number of steps (the metrics library's clock calibration) is taken out
# of each run's count before the difference.
# `haproxy` is HAProxy with the same forwarding headers, and `hyper` is the
# dyno itself under callgrind: hyper's server answering from memory, no
# proxying, what the HTTP library alone costs a request.
#
# PROTO=h2 measures cleartext HTTP/2 with prior knowledge instead (h2load,
# 4 connections × 16 streams): nginx listens with `http2`, HAProxy binds
# with `proto h2`, and the dyno behind every proxy still speaks HTTP/1.1.
#
#   PROTO=h2 TARGETS="switchyard haproxy nginx hyper" bash benches/load/instructions.sh
#
# CLOSE=1 measures a new connection per request instead (HTTP/1.1 with
# `Connection: close`, 4 clients one connection after another): the accept,
# the connection's set-up and its close are in the count.
#
# TLS=1 sends the load over TLS instead, to the HTTPS listener of `serve`
# and of the data plane (the only targets it takes): HTTP/2 by ALPN with
# PROTO=h2, as the harness's HTTP/2 table, or HTTP/1.1 as its HTTPS table.
#
#   TLS=1 PROTO=h2 TARGETS="serve switchyard" bash benches/load/instructions.sh
#
# Knobs: TARGETS ("serve switchyard nginx"), PROTO (h1), CLOSE, N1 (1000), N2
# (5000), BODY_BYTES (13), SWITCHYARD_ARGS (extra bench_router flags, e.g.
# --no-metrics), KEEP (a directory to keep the callgrind profiles in, for
# callgrind_annotate), SERVE_LOGS (`serve`'s log consumers: "tail drain",
# or `tail`, `drain`, `none`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGETS="${TARGETS:-serve switchyard nginx}"
N1="${N1:-1000}"
N2="${N2:-5000}"
BODY_BYTES="${BODY_BYTES:-13}"
PROTO="${PROTO:-h1}"
LOAD=(--h1 -c 8)
[[ $PROTO == h2 ]] && LOAD=(-c 4 -m 16)
if [[ ${TLS:-} == 1 ]]; then
    for t in $TARGETS; do
        [[ $t == serve || $t == switchyard ]] || {
            echo "TLS=1 measures serve and switchyard, not $t" >&2
            exit 2
        }
    done
    [[ ${CLOSE:-} == 1 ]] && {
        echo "TLS=1 is for keep-alive loads" >&2
        exit 2
    }
fi

tools=(valgrind:valgrind h2load:nghttp2-client)
[[ " $TARGETS " == *" nginx "* ]] && tools+=(nginx:nginx-light)
[[ " $TARGETS " == *" haproxy "* ]] && tools+=(haproxy:haproxy)
# shellcheck source=benches/load/apt.sh
source "$ROOT/benches/load/apt.sh"
install_missing "${tools[@]}"
# shellcheck source=benches/load/common.sh
source "$ROOT/benches/load/common.sh"
build_release --example dyno --example bench_router --example syslog_sink --bin switchyard
use_proto "$PROTO"

start_dyno "$BODY_BYTES"
# The serve target's drain: one receiver for every run.
start_sink

# Sends $2 requests to port $1 for host $3, each on a new connection
# (`Connection: close`), from 4 clients; prints "N succeeded" as h2load does.
close_load() {
    python3 - "$@" <<'EOF'
import socket, sys, threading
port, n, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
ok = []
def client(count):
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request)
            response = b""
            while chunk := s.recv(65536):
                response += chunk
        ok.append(response.startswith(b"HTTP/1.1 200"))
clients = [threading.Thread(target=client, args=(n // 4 + (i < n % 4),)) for i in range(4)]
for c in clients:
    c.start()
for c in clients:
    c.join()
print(f"{sum(ok)} succeeded")
EOF
}

# Runs one target under callgrind for $1 requests; prints the instructions.
run() {
    local target=$1 n=$2 port out host=() name=127.0.0.1 tls_port="" https=()
    port=$(free_port)
    out="$SCRATCH/cg.$target.$n"
    case $target in
    serve)
        start_serve "$port" "$DYNO_PORT" valgrind --tool=callgrind --callgrind-out-file="$out.%p"
        VP=$SERVE_PID
        for _ in $(seq 100); do
            [[ ${TLS:-} == 1 && -z $tls_port ]] || break
            tls_port=$(sed -n 's/^listening role=router-https addr=127.0.0.1://p' "$SCRATCH/serve.log")
            [[ -n $tls_port ]] || sleep 0.1
        done
        host=(-H ":authority: bench.localhost")
        name=bench.localhost
        ;;
    switchyard)
        if [[ ${TLS:-} == 1 ]]; then
            tls_port=$(free_port)
            https=(--https "127.0.0.1:$tls_port")
        fi
        # shellcheck disable=SC2086
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
            "$BIN/bench_router" --http "127.0.0.1:$port" "${https[@]}" --threads 1 \
            --dyno "127.0.0.1:$DYNO_PORT" --max-dyno-concurrency 10000 \
            --max-in-flight 100000 ${SWITCHYARD_ARGS:-} >"$SCRATCH/$target.log" 2>&1 &
        ;;
    nginx)
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
            nginx -c "$(nginx_conf "$port" "$DYNO_PORT" "$NGINX_LISTEN")" -p "$SCRATCH/nginx" \
            >"$SCRATCH/$target.log" 2>&1 &
        ;;
    haproxy)
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
            haproxy -db -f "$(haproxy_conf "$port" "$DYNO_PORT" "$HAPROXY_BIND")" \
            >"$SCRATCH/$target.log" 2>&1 &
        ;;
    hyper)
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
            "$BIN/dyno" --port "$port" --threads 1 --body-bytes "$BODY_BYTES" \
            >"$SCRATCH/$target.log" 2>&1 &
        ;;
    *)
        echo "unknown target $target" >&2
        exit 2
        ;;
    esac
    local vp=${VP:-$!}
    VP=
    wait_http "$port" "${CURL_PROTO[@]}"
    if [[ ${CLOSE:-} == 1 ]]; then
        close_load "$port" "$n" "$name" >"$SCRATCH/h2load.log" 2>&1
    elif [[ ${TLS:-} == 1 ]]; then
        h2load "${LOAD[@]}" -n "$n" -t 1 "${host[@]}" "https://127.0.0.1:$tls_port/" >"$SCRATCH/h2load.log" 2>&1
    else
        h2load "${LOAD[@]}" -n "$n" -t 1 "${host[@]}" "http://127.0.0.1:$port/" >"$SCRATCH/h2load.log" 2>&1
    fi
    grep -q "$n succeeded" "$SCRATCH/h2load.log" || {
        echo "$target: not every request succeeded:" >&2
        cat "$SCRATCH/h2load.log" >&2
        exit 1
    }
    # A background job of a script ignores SIGINT unless the program
    # handles it, as switchyard does; nginx shuts down on SIGQUIT.
    case $target in
    serve | switchyard) kill -INT "$vp" ;;
    nginx) kill -QUIT "$vp" ;;
    *) kill -TERM "$vp" ;;
    esac
    wait "$vp" 2>/dev/null || true
    [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$out".* "$KEEP/"
    # Less the clock calibration of the metrics library (quanta), which
    # loops for a stretch of wall-clock time at start-up: under callgrind
    # that is anywhere from 9 to 18 million instructions a run, ±1,500 a
    # request in the difference, none of it per request.
    local total=0 f all calib
    for f in "$out".*; do
        all=$(awk '/^summary:/ {print $2}' "$f")
        calib=$(callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$f" 2>/dev/null |
            grep 'quanta::Calibration::calibrate' | tr -d , | awk '{print $1}' | sort -rn | head -1)
        total=$((total + all - ${calib:-0}))
    done
    echo "$total"
}

mode=$PROTO
[[ ${CLOSE:-} == 1 ]] && mode="h1, a connection per request"
[[ ${TLS:-} == 1 ]] && mode="$PROTO over TLS"
echo "| target ($mode) | instructions / request | vs nginx | vs HAProxy |"
echo "|---|---:|---:|---:|"
declare -A per
for t in $TARGETS; do
    a=$(run "$t" "$N1")
    b=$(run "$t" "$N2")
    per[$t]=$(((b - a) / (N2 - N1)))
done
# Prints target $1's count over peer $2's, or a dash without that peer.
ratio() {
    if [[ -n ${per[$2]:-} ]]; then
        python3 -c "print(f'{${per[$1]} / ${per[$2]}:.2f}×')"
    else
        echo "—"
    fi
}
for t in $TARGETS; do
    printf '| %s | %s | %s | %s |\n' "$t" "$(printf "%'d" "${per[$t]}")" \
        "$(ratio "$t" nginx)" "$(ratio "$t" haproxy)"
done
