# Shared by the load scripts (sourced): a scratch directory and the
# processes to stop when the script exits, the release build, free ports,
# waiting for a listener, the dyno, and `switchyard serve` set up the way
# the harness runs it.
# Expects ROOT.

SCRATCH="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# What the proxies listen for, set by `use_proto h1|h2`: HTTP/1.1 (the
# default), or cleartext HTTP/2 with prior knowledge, where nginx listens
# with `http2`, HAProxy binds with `proto h2` and `wait_http` needs
# CURL_PROTO. The dyno behind every proxy speaks HTTP/1.1 either way.
# CLOSE=1 (a new connection per request) is an HTTP/1.1 load.
CURL_PROTO=()
NGINX_LISTEN=""
HAPROXY_BIND=""
use_proto() {
    case $1 in
    h1) CURL_PROTO=() NGINX_LISTEN="" HAPROXY_BIND="" ;;
    h2)
        [[ ${CLOSE:-} == 1 ]] && {
            echo "CLOSE=1 is for PROTO=h1" >&2
            exit 2
        }
        CURL_PROTO=(--http2-prior-knowledge) NGINX_LISTEN=http2 HAPROXY_BIND="proto h2"
        ;;
    *)
        echo "PROTO is h1 or h2, not $1" >&2
        exit 2
        ;;
    esac
}

# `build_release ARG…` builds in release mode what the arguments name
# (`--example dyno`, `--bin switchyard`) and sets BIN to the examples
# directory.
build_release() {
    cargo build --release "$@" >&2
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"
}

# utime and stime of process $1 (all its threads), in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# The machine's busy time (all CPUs: user, nice, system, irq and softirq),
# in clock ticks.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The percentile $1 (50, 90, 99) of `wrk --latency`'s output on stdin, in
# ms (wrk prints a number and a unit: us, ms or s).
wrk_ms() {
    awk -v p="$1%" '$1 == p {
        v = $2; scale = 1
        if (v ~ /us$/) scale = 0.001; else if (v ~ /ms$/) scale = 1; else if (v ~ /s$/) scale = 1000
        sub(/[a-z]+$/, "", v); print v * scale
    }'
}

wait_http() {
    local port=$1
    shift
    for _ in $(seq 200); do
        curl -s -o /dev/null "$@" "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    echo "nothing answered on port $port" >&2
    return 1
}

# Starts the load harness's dyno answering $1-byte bodies, on DYNO_THREADS
# threads (1; the harness gives it one per CPU); its port goes in DYNO_PORT.
start_dyno() {
    DYNO_PORT=$(free_port)
    "$BIN/dyno" --port "$DYNO_PORT" --threads "${DYNO_THREADS:-1}" --body-bytes "$1" \
        >"$SCRATCH/dyno.log" 2>&1 &
    PIDS+=($!)
    wait_http "$DYNO_PORT"
}

# Starts the drain's receiver, a counting syslog sink; its port goes in
# SINK_PORT. Call it from the script itself, not a subshell, so that it is
# stopped at exit.
start_sink() {
    coproc SINK { exec "$BIN/syslog_sink" --ports 1 --report-ms 0 2>"$SCRATCH/sink.log"; }
    PIDS+=("$SINK_PID")
    local sink_line
    read -r sink_line <&"${SINK[0]}"
    SINK_PORT=${sink_line##*:}
}

# Starts `switchyard serve --router-threads 1` on port $1 in front of the
# dyno on port $2, prefixed by the rest of the arguments (e.g. valgrind),
# and configures it through its own API: one app `bench` whose router
# lines go to a live tail (read by `curl -N`) and a TCP syslog drain into
# the sink (started here if start_sink was not called). The process's pid
# goes in SERVE_PID. SERVE_BIN, when set, is the binary to run instead of
# the release build's. SERVE_LOGS ("tail drain") names the log consumers
# to set up: `tail`, `drain`, both, or neither (e.g. `none`).
start_serve() {
    local port=$1 dyno=$2
    shift 2
    [[ -n ${SINK_PORT:-} ]] || start_sink
    local key=bench-serve-key-0123456789abcdef api="" data="$SCRATCH/serve-$RANDOM"
    SWITCHYARD_API_KEY=$key SWITCHYARD_LOG=warn "$@" "${SERVE_BIN:-${BIN%/examples}/switchyard}" serve \
        --data-dir "$data" --router-threads 1 --http "127.0.0.1:$port" \
        --https 127.0.0.1:0 --api 127.0.0.1:0 --logplex-http 127.0.0.1:0 \
        --syslog 127.0.0.1:0 --syslog-tls 127.0.0.1:0 --admin 127.0.0.1:0 \
        >"$SCRATCH/serve.log" 2>&1 &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    for _ in $(seq 600); do
        api=$(sed -n 's/^listening role=api addr=//p' "$SCRATCH/serve.log")
        [[ -n $api ]] && break
        sleep 0.1
    done
    [[ -n $api ]] || { echo "switchyard serve did not start" >&2; cat "$SCRATCH/serve.log" >&2; exit 1; }
    call() {
        curl -sf -X "$1" -H "Authorization: Bearer $key" ${3:+-d "$3"} "http://$api$2"
    }
    call POST /apps '{"name":"bench"}' >/dev/null
    call PATCH /apps/bench/router-settings \
        '{"max_dyno_concurrency":10000,"max_in_flight":100000}' >/dev/null
    call PUT /apps/bench/dynos/web.1 "{\"address\":\"127.0.0.1:$dyno\"}" >/dev/null
    local logs=${SERVE_LOGS:-tail drain}
    if [[ $logs == *drain* ]]; then
        call POST /apps/bench/log-drains "{\"url\":\"syslog://127.0.0.1:$SINK_PORT\"}" >/dev/null
    fi
    if [[ $logs == *tail* ]]; then
        local url
        url=$(call POST /apps/bench/log-sessions '{"tail":true}' |
            sed 's/.*"logplex_url":"\([^"]*\)".*/\1/')
        curl -sN "$url" >/dev/null &
        PIDS+=($!)
    fi
}

# Writes an nginx config (one worker, upstream keep-alive, the same
# forwarding headers the router sets) for a listener on port $1 in front
# of the dyno on port $2; $3, when given, is added to the listen line
# (`http2` for cleartext HTTP/2 with prior knowledge). Prints its path.
nginx_conf() {
    mkdir -p "$SCRATCH/nginx"
    cat >"$SCRATCH/nginx/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $SCRATCH/nginx/nginx.pid;
error_log $SCRATCH/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream dyno { server 127.0.0.1:$2; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$1${3:+ $3};
    location / {
      proxy_pass http://dyno;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Request-Start "t=\${msec}";
    }
  }
}
CONF
    echo "$SCRATCH/nginx/nginx.conf"
}

# Writes an HAProxy config (one thread, connection reuse to the dyno, the
# same forwarding headers the router sets) for a listener on port $1 in
# front of the dyno on port $2; $3, when given, is added to the bind line
# (`proto h2` for cleartext HTTP/2 with prior knowledge). Prints its path.
haproxy_conf() {
    cat >"$SCRATCH/haproxy.cfg" <<EOF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$1${3:+ $3}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-Start t=%[date(0,ms)]
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  http-request set-header X-Request-Id %[unique-id]
  default_backend b
backend b
  http-reuse always
  server d 127.0.0.1:$2
EOF
    echo "$SCRATCH/haproxy.cfg"
}

# Starts target $1 (serve, switchyard, haproxy or nginx) on port $2 in
# front of the dyno on DYNO_PORT; its pid goes in TPID. nginx and HAProxy
# set the forwarding headers the router sets (as in the load harness).
# They listen for what `use_proto` chose (Switchyard's listener takes both).
start_target() {
    local target=$1 port=$2
    case $target in
    serve)
        start_serve "$port" "$DYNO_PORT"
        TPID=$SERVE_PID
        ;;
    switchyard)
        "${BENCH_ROUTER:-$BIN/bench_router}" --http "127.0.0.1:$port" --threads 1 \
            --dyno "127.0.0.1:$DYNO_PORT" --max-dyno-concurrency 10000 \
            --max-in-flight 100000 >"$SCRATCH/switchyard.log" 2>&1 &
        PIDS+=($!)
        TPID=$!
        ;;
    haproxy)
        haproxy_conf "$port" "$DYNO_PORT" "$HAPROXY_BIND" >/dev/null
        haproxy -f "$SCRATCH/haproxy.cfg" >"$SCRATCH/haproxy.log" 2>&1 &
        PIDS+=($!)
        TPID=$!
        ;;
    nginx)
        nginx -c "$(nginx_conf "$port" "$DYNO_PORT" "$NGINX_LISTEN")" \
            -p "$SCRATCH/nginx" >"$SCRATCH/nginx.log" 2>&1 &
        PIDS+=($!)
        TPID=$!
        ;;
    esac
}
