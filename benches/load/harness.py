#!/usr/bin/env python3
"""Switchyard's load harness (started by benches/load/run.sh, which builds
the binaries and installs the tools first).

Throughput: one dyno server (examples/dyno.rs), and in front of it the
shipped `switchyard serve` (router lines into logplex with a live tail and
a TCP drain, /metrics scraped), Switchyard's data plane alone
(examples/bench_router.rs), nginx (access log off, and on to a file) and
HAProxy with equivalent settings: keep-alive to the dyno, the same
forwarding headers (X-Forwarded-For/Proto/Port, X-Request-Id,
X-Request-Start), the same ECDSA P-256 certificate kind, TLS 1.2+ with ALPN
h2 and http/1.1. Each fairness setting gives every proxy the same number of
worker threads (nginx worker_processes, HAProxy nbthread, tokio
worker_threads). Within a setting the runs are interleaved: every round
visits every scenario and, in a fresh random order, every target, so drift
of a shared machine lands on all of them alike; the table keeps the median
of the rounds. CPU is the proxy's own (all its processes' utime + stime
from /proc) divided by the requests it served; for `serve`, the share of
it taken by threads other than the router's (logplex, the control plane,
metrics) is printed under each table.

Queueing: 8 dynos serving one request at a time with random service times,
open-loop Poisson arrivals (examples/openloop.rs), several routers, and the
ideal central FIFO queue computed for the same arrival rate, both in closed
form (M/M/c, Erlang C, with the run's measured mean service time) and by
simulating a central queue over the service times the run really had
(M/G/c).

Logplex: syslog lines over TCP (examples/syslog_blast.rs, octet-counted RFC
5424) into the real `switchyard serve` binary, routed by an app's log token
to 1 or 10 `syslog://` drains added through the control API, and received
by a counting endpoint (examples/syslog_sink.rs); the same path through
rsyslog (imptcp -> omfwd, one action per drain, octet-counted RFC 5424
out). Delivered lines/s is every line received at every drain divided by
the time from the first line sent to the last line received.
"""

import json
import math
import queue
import threading
import http.client
import urllib.request
import heapq
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("SWITCHYARD_BENCH_BIN", "target/release/examples")
NPROC = os.cpu_count() or 1
CLK = os.sysconf("SC_CLK_TCK")
ENV = os.environ

PARTS = ENV.get("PARTS", "throughput,queueing,logplex").split(",")
DURATION = int(ENV.get("DURATION", "10"))
ROUNDS = int(ENV.get("ROUNDS", "3"))
THREADS = ENV.get("THREADS", "1 all").split()
SCENARIOS = ENV.get("SCENARIOS", "keepalive big close https h2").split()
QDURATION = float(ENV.get("QDURATION", "20"))
LOADS = [float(x) for x in ENV.get("LOADS", "0.5 0.7 0.85 0.95").split()]
DISTS = ENV.get("DISTS", "exp weibull").split()
OUT = ENV.get("OUT")
LINES_N = int(ENV.get("LINES", "1000000"))
LDRAINS = [int(x) for x in ENV.get("LDRAINS", "1 10").split()]
LCONNS = int(ENV.get("LCONNS", "2"))
MSG_BYTES = int(ENV.get("MSG_BYTES", "120"))
LTARGETS = ENV.get("LTARGETS", "switchyard rsyslog").split()
RSYSLOG_QUEUE = ENV.get("RSYSLOG_QUEUE", "direct")
PERF_DIR = ENV.get("PERF_DIR")  # perf record each logplex run into this directory
SWITCHYARD = ENV.get("SWITCHYARD_BIN", os.path.join(os.path.dirname(BIN), "switchyard"))

DYNO = 19000
PORTS = {  # target -> (http, https)
    "switchyard": (19080, 19443),
    "nginx": (19180, 19543),
    "haproxy": (19280, 19643),
    "serve": (19380, 19743),
    "nginx-log": (19480, 19843),
}
# Throughput targets, in table order. `serve` is the shipped binary as users
# run it (router lines into logplex with a tail and a drain, metrics
# scraped); `switchyard` is the data plane alone (examples/bench_router.rs,
# router lines formatted and dropped); `nginx-log` is nginx with its access
# log written to a file, since Switchyard always logs.
TARGETS = ENV.get("TARGETS", "direct serve switchyard nginx nginx-log haproxy").split()
SERVE_HOST = "bench.localhost"
SERVE_KEY = "bench-serve-key-0123456789abcdef"
SCRAPE_S = float(ENV.get("SCRAPE_S", "15"))
QDYNO = 19100
QDYNOS = 8
QSERVICE_MS = 20.0

SCENARIO_TITLES = {
    "keepalive": "Small body (13 B), HTTP/1.1 keep-alive",
    "big": "64 KiB responses, HTTP/1.1 keep-alive",
    "close": "New connection per request (HTTP/1.1, `Connection: close`)",
    "https": "HTTPS (TLS 1.3, HTTP/1.1 keep-alive, 13 B)",
    "h2": "HTTP/2 over TLS (h2load, 13 B)",
}

TMP = tempfile.mkdtemp(prefix="switchyard-bench-")
PROCS = []
LINES = []


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line=""):
    LINES.append(line)
    print(line, flush=True)


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start(name, cmd, ports):
    log = open(os.path.join(TMP, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    for port in ports:
        wait_port(port)
    return p


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def stop_all():
    for p in list(PROCS):
        stop(p)


def read_stat(path):
    """(name, parent pid, utime + stime in ticks) from a /proc stat file, or
    None when it is gone."""
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(")") + 2:].split()
    return s[s.find("(") + 1:s.rfind(")")], int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu(pid):
    """utime + stime in seconds of pid and its descendants."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            stat = read_stat(f"/proc/{d}/stat")
            if stat:
                _, ppid, ticks = stat
                stats[int(d)] = (ppid, ticks)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(c for c, (pp, _) in stats.items() if pp == p)
    return total / CLK


def machine_busy():
    """Seconds of CPU the whole machine spent busy (every core, user,
    system and interrupts), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK


def task_cpu(pid, tid):
    """utime + stime in seconds of one thread, or 0 when it is gone."""
    stat = read_stat(f"/proc/{pid}/task/{tid}/stat")
    return stat[2] / CLK if stat else 0.0


def thread_cpu(pid, prefix):
    """utime + stime in seconds of pid's threads, split into those whose
    name starts with prefix and the rest."""
    mine = rest = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        stat = read_stat(f"/proc/{pid}/task/{tid}/stat")
        if not stat:
            continue
        name, _, ticks = stat
        if name.startswith(prefix):
            mine += ticks
        else:
            rest += ticks
    return mine / CLK, rest / CLK


# ---------------------------------------------------------------- configs

def make_cert():
    key, cert = os.path.join(TMP, "key.pem"), os.path.join(TMP, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    combined = os.path.join(TMP, "combined.pem")
    with open(combined, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, combined


NGINX_HEAD = """
worker_processes @T@;
daemon off;
master_process on;
user root;
pid @TMP@/nginx-@NAME@.pid;
error_log @TMP@/nginx-@NAME@-error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  @ACCESS_LOG@
  client_body_temp_path @TMP@/ngx-body;
  proxy_temp_path @TMP@/ngx-proxy;
  fastcgi_temp_path @TMP@/ngx-fcgi;
  uwsgi_temp_path @TMP@/ngx-uwsgi;
  scgi_temp_path @TMP@/ngx-scgi;
  keepalive_requests 10000000;
  proxy_buffers 32 8k;
"""

NGINX_LOCATION = """
    location / {
      proxy_pass http://@UPSTREAM@;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Request-Start "t=${msec}";
      proxy_read_timeout 60s;
    }
"""


def nginx_conf(name, threads, servers, access_log=False):
    """servers: list of (listen lines, upstream name, balance directive, [dyno ports]).
    With `access_log`, nginx writes its default combined log to a file in the
    scratch directory (buffered 64 KiB, as a busy site would configure it)."""
    log = (f"access_log {TMP}/nginx-{name}-access.log combined buffer=64k;" if access_log
           else "access_log off;")
    conf = NGINX_HEAD.replace("@ACCESS_LOG@", log)
    for listens, upstream, balance, dynos in servers:
        conf += f"  upstream {upstream} {{\n"
        if balance:
            conf += f"    {balance};\n"
        for d in dynos:
            conf += f"    server 127.0.0.1:{d};\n"
        conf += "    keepalive 512;\n    keepalive_requests 10000000;\n  }\n"
        conf += "  server {\n" + "".join(f"    {l};\n" for l in listens)
        conf += "    ssl_certificate @CERT@;\n    ssl_certificate_key @KEY@;\n"
        conf += "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        conf += NGINX_LOCATION.replace("@UPSTREAM@", upstream)
        conf += "  }\n"
    conf += "}\n"
    conf = (conf.replace("@T@", str(threads)).replace("@TMP@", TMP).replace("@NAME@", name)
            .replace("@CERT@", CERT).replace("@KEY@", KEY))
    path = os.path.join(TMP, f"nginx-{name}.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-c", path, "-e", os.path.join(TMP, f"nginx-{name}-error.log")]


def haproxy_conf(name, threads, frontends):
    """frontends: list of (binds, balance, [dyno ports], maxconn or None)."""
    conf = f"""
global
  nbthread {threads}
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 60s
  option http-keep-alive
  http-reuse always
"""
    for i, (binds, balance, dynos, maxconn) in enumerate(frontends):
        conf += f"frontend fe{i}\n"
        for b in binds:
            conf += f"  bind {b}\n"
        conf += """  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-Start t=%[date(0,ms)]
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  http-request set-header X-Request-Id %[unique-id]
"""
        conf += f"  default_backend be{i}\nbackend be{i}\n  balance {balance}\n"
        for j, d in enumerate(dynos):
            mc = f" maxconn {maxconn}" if maxconn else ""
            conf += f"  server d{j} 127.0.0.1:{d}{mc}\n"
    path = os.path.join(TMP, f"haproxy-{name}.cfg")
    with open(path, "w") as f:
        f.write(conf)
    return ["haproxy", "-db", "-f", path]


def router_cmd(threads, http, https, dynos, balance="least-outstanding", concurrency=50,
               max_in_flight=None):
    cmd = [os.path.join(BIN, "bench_router"), "--http", f"127.0.0.1:{http}",
           "--threads", str(threads), "--balance", balance,
           "--max-dyno-concurrency", str(concurrency)]
    if max_in_flight:
        cmd += ["--max-in-flight", str(max_in_flight)]
    if https:
        cmd += ["--https", f"127.0.0.1:{https}"]
    for d in dynos:
        cmd += ["--dyno", f"127.0.0.1:{d}"]
    return cmd


# ---------------------------------------------------------------- throughput

WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,' ..
    '"p50":%d,"p99":%d,"p999":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def run_wrk(url, conns, duration, headers=()):
    lua = os.path.join(TMP, "report.lua")
    if not os.path.exists(lua):
        with open(lua, "w") as f:
            f.write(WRK_LUA)
    cmd = ["wrk", "-t", str(min(NPROC, 2)), "-c", str(conns), "-d", f"{duration}s",
           "--timeout", "10s", "-s", lua]
    for h in headers:
        cmd += ["-H", h]
    res = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60)
    for line in res.stdout.splitlines():
        if line.startswith("JSON "):
            j = json.loads(line[5:])
            secs = j["duration_us"] / 1e6
            return {"requests": j["requests"], "rps": j["requests"] / secs,
                    "p50": j["p50"] / 1000, "p99": j["p99"] / 1000, "p999": j["p999"] / 1000,
                    "errors": j["errors"] + j["status_errors"]}
    raise RuntimeError(f"wrk failed: {res.stdout} {res.stderr}")


def run_h2load(url, clients, duration, headers=()):
    log = os.path.join(TMP, "h2load.log")
    if os.path.exists(log):
        os.remove(log)
    cmd = ["h2load", "-t", str(min(NPROC, 2)), "-c", str(clients), "-m", "16",
           "-D", str(duration), "--warm-up-time", "1", "--log-file", log]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    done = failed = 0
    rps = None
    for line in res.stdout.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            parts = [p.strip() for p in line[len("requests:"):].split(",")]
            vals = {p.split()[1]: int(p.split()[0]) for p in parts}
            done, failed = vals.get("succeeded", 0), vals.get("failed", 0) + vals.get("errored", 0)
    lat = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                lat.append(int(cols[2]) / 1000)
    if rps is None or not lat:
        raise RuntimeError(f"h2load failed: {res.stdout} {res.stderr}")
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(math.ceil(p / 100 * len(lat))) - 1)]
    return {"requests": done, "rps": rps, "p50": q(50), "p99": q(99), "p999": q(99.9),
            "errors": failed}


def one_run(scenario, target, proc, duration, shipped=None):
    if target == "direct":
        http, https = DYNO, None
    else:
        http, https = PORTS[target]
    if scenario == "https" and target == "direct":
        return None
    cpu0 = tree_cpu(proc.pid) if proc else 0.0
    split0 = thread_cpu(proc.pid, "router-") if target == "serve" else None
    consumers0 = shipped.consumers_cpu() if shipped and target == "serve" else None
    busy0 = machine_busy()
    # The shipped binary routes by host like any user's deployment.
    host = [f"Host: {SERVE_HOST}"] if target == "serve" else []
    if scenario == "keepalive":
        r = run_wrk(f"http://127.0.0.1:{http}/", 64, duration, host)
    elif scenario == "big":
        r = run_wrk(f"http://127.0.0.1:{http}/big", 64, duration, host)
    elif scenario == "close":
        r = run_wrk(f"http://127.0.0.1:{http}/", 16, duration, ["Connection: close"] + host)
    elif scenario == "https":
        r = run_wrk(f"https://127.0.0.1:{https}/", 64, duration, host)
    elif scenario == "h2":
        url = f"http://127.0.0.1:{http}/" if target == "direct" else f"https://127.0.0.1:{https}/"
        r = run_h2load(url, 16, duration,
                       [f":authority: {SERVE_HOST}"] if target == "serve" else [])
    else:
        raise ValueError(scenario)
    busy = machine_busy() - busy0
    cpu = (tree_cpu(proc.pid) - cpu0) if proc else None
    if r["requests"]:
        # Everything the two cores did for a request: the load generator,
        # the dyno, the proxy, and for serve its log consumers too.
        r["machine_us"] = busy / r["requests"] * 1e6
        if consumers0 is not None:
            r["consumers_us"] = (shipped.consumers_cpu() - consumers0) / r["requests"] * 1e6
    if split0:
        # How much of serve's CPU its threads other than the router's
        # (logplex, the control plane, metrics) took over the run.
        # (A thread that ended during the run takes its time with it.)
        router, rest = (max(0.0, b - a) for a, b in zip(split0, thread_cpu(proc.pid, "router-")))
        r["beside"] = rest / (router + rest) if router + rest > 0 else None
    r["cpu100k"] = cpu / r["requests"] * 1e5 if cpu is not None and r["requests"] else None
    return r


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def throughput():
    for setting in THREADS:
        threads = NPROC if setting == "all" else int(setting)
        say(f"== throughput, {threads} worker thread(s) per proxy")
        dyno = start("dyno", [os.path.join(BIN, "dyno"), "--port", str(DYNO),
                              "--threads", str(NPROC), "--body-bytes", "13",
                              "--big-bytes", "65536"], [DYNO])
        procs = {}
        shipped = None
        for t in TARGETS:
            if t == "direct":
                procs[t] = None
            elif t == "serve":
                shipped = ShippedSwitchyard(threads, *PORTS["serve"], DYNO)
                procs[t] = shipped.proc
            elif t == "switchyard":
                sh, ss = PORTS["switchyard"]
                # No per-dyno limit or H11 bound below the client concurrency:
                # nginx and HAProxy have none in this setting either.
                procs[t] = start("switchyard", router_cmd(threads, sh, ss, [DYNO],
                                                          concurrency=100_000,
                                                          max_in_flight=100_000), [sh, ss])
            elif t in ("nginx", "nginx-log"):
                nh, ns = PORTS[t]
                procs[t] = start(t, nginx_conf(t, threads, [(
                    [f"listen 127.0.0.1:{nh} backlog=4096",
                     f"listen 127.0.0.1:{ns} ssl http2 backlog=4096"],
                    "dyno", None, [DYNO])], access_log=(t == "nginx-log")), [nh, ns])
            elif t == "haproxy":
                hh, hs = PORTS["haproxy"]
                procs[t] = start("haproxy", haproxy_conf("tp", threads, [(
                    [f"127.0.0.1:{hh}", f"127.0.0.1:{hs} ssl crt {COMBINED} alpn h2,http/1.1"],
                    "roundrobin", [DYNO], None)]), [hh, hs])
            else:
                raise ValueError(f"unknown target {t}")
        targets = list(procs)
        # Warm every path once (connection pools, TLS session setup, caches).
        for t in targets:
            for sc in SCENARIOS:
                try:
                    one_run(sc, t, procs[t], 1, shipped)
                except Exception as e:  # noqa: BLE001 - report and go on
                    say(f"warm-up {sc} {t}: {e}")
        results = {}
        for rnd in range(ROUNDS):
            for sc in SCENARIOS:
                order = targets[:]
                random.shuffle(order)
                for t in order:
                    try:
                        r = one_run(sc, t, procs[t], DURATION, shipped)
                    except Exception as e:  # noqa: BLE001 - a failed cell is reported, not fatal
                        say(f"{sc} {t}: {e}")
                        r = None
                    if r:
                        say(f"  round {rnd + 1} {sc:9} {t:10} {r['rps']:10.0f} req/s "
                            f"p99 {r['p99']:.2f} ms errors {r['errors']}")
                        results.setdefault((sc, t), []).append(r)
        if shipped:
            say(f"  serve: {shipped.summary()}")
            shipped.close()
        for p in [procs[t] for t in targets if procs[t]] + [dyno]:
            stop(p)
        report_throughput(threads, targets, results)


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def report_throughput(threads, targets, results):
    out(f"### {threads} worker thread{'s' if threads != 1 else ''} per proxy "
        f"({ROUNDS} interleaved rounds × {DURATION} s, medians)")
    out()
    for sc in SCENARIOS:
        out(f"**{SCENARIO_TITLES[sc]}**")
        out()
        out("| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU s / 100k req "
            "| machine CPU µs / req | errors "
            "| vs direct | vs nginx | vs HAProxy | vs better peer |")
        out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rps = {t: median_of(results.get((sc, t), []), "rps") for t in targets}
        for t in targets:
            runs = results.get((sc, t), [])
            if not runs:
                note = "n/a (the dyno speaks no TLS)" if t == "direct" else "failed"
                out(f"| {t} | {note} | | | | | | | | | | |")
                continue
            ratio = lambda other: (fmt(rps[t] / rps[other]) + "×") if rps.get(other) else "—"
            peers = [rps[p] for p in ("nginx", "haproxy") if rps.get(p)]
            better = (fmt(rps[t] / max(peers)) + "×") if peers else "—"
            errs = sum(r["errors"] for r in runs)
            out(f"| {t} | {rps[t]:,.0f} | {fmt(median_of(runs, 'p50'))} | "
                f"{fmt(median_of(runs, 'p99'))} | {fmt(median_of(runs, 'p999'))} | "
                f"{fmt(median_of(runs, 'cpu100k'))} | {fmt(median_of(runs, 'machine_us'), 1)} | "
                f"{errs} | {ratio('direct')} | "
                f"{ratio('nginx')} | {ratio('haproxy')} | {better} |")
        beside = median_of(results.get((sc, "serve"), []), "beside")
        if beside is not None:
            out()
            out(f"`serve` spent {beside:.1%} of its CPU outside its router threads "
                "(logplex, the control plane, metrics; median of the rounds).")
        consumers = median_of(results.get((sc, "serve"), []), "consumers_us")
        machine = median_of(results.get((sc, "serve"), []), "machine_us")
        if consumers is not None and machine:
            out(f"Its log consumers (the drain's syslog sink and the tail's reader, "
                f"which no peer's row has) spent {consumers:.2f} µs a request, "
                f"{consumers / machine:.1%} of the machine's CPU a request.")
        out()


class ShippedSwitchyard:
    """The binary users run: `switchyard serve` with `--router-threads`,
    default settings otherwise, one app (`bench`) whose one web dyno is the
    bench dyno, a per-dyno cap and H11 bound above the client concurrency
    (as for the data-plane row), router lines flowing into the app's channel
    with one live tail (read and counted) and one TCP syslog drain
    (examples/syslog_sink.rs), and a Prometheus-style scrape of /metrics
    every SCRAPE_S seconds."""

    def __init__(self, threads, http, https, dyno):
        data = os.path.join(TMP, f"serve-{threads}-data")
        cmd = [SWITCHYARD, "serve", "--data-dir", data, "--router-threads", str(threads),
               "--http", f"127.0.0.1:{http}", "--https", f"127.0.0.1:{https}",
               "--tls-cert", CERT, "--tls-key", KEY]
        for flag in ["--api", "--logplex-http", "--syslog", "--syslog-tls", "--admin"]:
            cmd += [flag, "127.0.0.1:0"]
        log = os.path.join(TMP, f"serve-{threads}.log")
        env = dict(os.environ, SWITCHYARD_API_KEY=SERVE_KEY, SWITCHYARD_LOG="warn")
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        PROCS.append(self.proc)
        addrs, deadline = {}, time.time() + 30
        while len(addrs) < 8:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"switchyard serve did not start: {open(log).read()}")
            for line in open(log):
                if line.startswith("listening role="):
                    addrs[line.split()[1][5:]] = line.split()[2][5:]
            time.sleep(0.05)
        self.admin = addrs["admin"]
        api = f"http://{addrs['api']}"
        api_call(api, SERVE_KEY, "POST", "/apps", {"name": "bench"})
        api_call(api, SERVE_KEY, "PATCH", "/apps/bench/router-settings",
                 {"max_dyno_concurrency": 10_000, "max_in_flight": 100_000})
        api_call(api, SERVE_KEY, "PUT", "/apps/bench/dynos/web.1",
                 {"address": f"127.0.0.1:{dyno}", "state": "up"})
        self.sink = Sink(f"serve-{threads}-drain", 1)
        api_call(api, SERVE_KEY, "POST", "/apps/bench/log-drains",
                 {"url": f"syslog://127.0.0.1:{self.sink.ports[0]}"})
        session = api_call(api, SERVE_KEY, "POST", "/apps/bench/log-sessions", {"tail": True})
        self.tailed = 0
        self.scrapes = 0
        self.done = threading.Event()
        self.tail = urllib.request.urlopen(session["logplex_url"], timeout=3600)
        self.tail_tid = None
        threading.Thread(target=self._tail, daemon=True).start()
        threading.Thread(target=self._scrape, daemon=True).start()
        wait_port(http)

    def _tail(self):
        # Counted a read at a time, not a line at a time: on two shared
        # cores a Python loop per line would take CPU from the proxies
        # being measured (a tail reader should cost what `curl -N` does).
        self.tail_tid = threading.get_native_id()
        mark = b"heroku[router]"
        carry = b""
        try:
            while chunk := self.tail.read1(1 << 16):
                data = carry + chunk
                self.tailed += data.count(mark)
                carry = data[-(len(mark) - 1):]
        except (OSError, ValueError, http.client.HTTPException):
            # The server went away at the end of the run.
            pass

    def consumers_cpu(self):
        """CPU seconds the log consumers have spent: the drain's sink
        process and the thread of this script that reads the tail."""
        tail = task_cpu(os.getpid(), self.tail_tid) if self.tail_tid else 0.0
        return tree_cpu(self.sink.proc.pid) + tail

    def _scrape(self):
        while not self.done.wait(SCRAPE_S):
            try:
                with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as r:
                    r.read()
                self.scrapes += 1
            except OSError as e:
                say(f"  serve: scrape failed: {e}")

    def summary(self):
        drained = self.sink.status()["ports"][0]["frames"]
        sums = metric_sums(self.admin, "logplex_drain_")
        return (f"{self.tailed:,} router lines tailed, {drained:,} drained, "
                f"{int(sums.get('logplex_drain_dropped_lines_total', 0)):,} dropped (L10), "
                f"{self.scrapes} scrapes")

    def close(self):
        # The tail's reader thread ends when the server stops (closing the
        # response here would wait on the lock that thread holds).
        self.done.set()
        stop(self.sink.proc)


# ---------------------------------------------------------------- queueing

def erlang_c(c, a):
    """Probability that an arrival waits in M/M/c with offered load a = λ/μ."""
    s = sum(a ** k / math.factorial(k) for k in range(c))
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (s + top)


def mmc_sojourn(c, lam, mean_s, p):
    """Mean and p-quantile of time in system for M/M/c (seconds)."""
    mu = 1 / mean_s
    a = lam / mu
    if a >= c:  # the measured service times make the queue unstable
        return math.inf, math.inf
    pw = erlang_c(c, a)
    theta = c * mu - lam
    mean = pw / theta + mean_s

    def tail(t):  # P(T > t), T = W + S
        if abs(theta - mu) < 1e-12:
            hypo = math.exp(-mu * t) * (1 + mu * t)
        else:
            hypo = (mu * math.exp(-theta * t) - theta * math.exp(-mu * t)) / (mu - theta)
        return (1 - pw) * math.exp(-mu * t) + pw * hypo

    lo, hi = 0.0, 1.0
    while tail(hi) > 1 - p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > 1 - p else (lo, mid)
    return mean, hi


def central_queue_sim(c, lam, services, n=200_000, seed=7):
    """M/G/c: one FIFO in front of c servers, service times resampled from
    the run's measured ones. Returns (mean, p99) of time in system, seconds."""
    rng = random.Random(seed)
    free = [0.0] * c
    t, soj = 0.0, []
    for _ in range(n):
        t += rng.expovariate(lam)
        start_at = max(t, heapq.heappop(free))
        s = rng.choice(services)
        heapq.heappush(free, start_at + s)
        soj.append(start_at + s - t)
    soj = soj[n // 10:]
    soj.sort()
    return statistics.fmean(soj), soj[int(0.99 * len(soj)) - 1]


def openloop(port, rate, dump, seed=None, host=None):
    """Open-loop arrivals at `port` (or spread at random over a list of
    ports); with `seed`, the same arrival sequence every time; with `host`,
    that `Host` header."""
    ports = port if isinstance(port, list) else [port]
    cmd = [os.path.join(BIN, "openloop"), "--rate", str(rate), "--duration", str(QDURATION),
           "--warmup", "3", "--dump", dump]
    for p in ports:
        cmd += ["--url", f"http://127.0.0.1:{p}/"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if host:
        cmd += ["--host", host]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=QDURATION + 120)
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"openloop failed: {res.stdout} {res.stderr}")


def queueing():
    dynos = [QDYNO + i for i in range(QDYNOS)]
    configs = [
        ("Switchyard least-outstanding + queue", 19081),
        ("Switchyard random (no limit)", 19082),
        ("nginx round-robin", 19181),
        ("nginx least_conn", 19182),
        ("HAProxy leastconn maxconn 1", 19281),
    ]
    for dist in DISTS:
        say(f"== queueing, {dist} service times, mean {QSERVICE_MS} ms, {QDYNOS} dynos")
        procs = [
            start("qdynos", [os.path.join(BIN, "dyno"), "--port", str(QDYNO), "--count",
                             str(QDYNOS), "--threads", "1", "--concurrency", "1",
                             "--service", str(QSERVICE_MS), "--dist", dist], dynos),
            start("q-sy-lo", router_cmd(1, 19081, None, dynos, "least-outstanding", 1), [19081]),
            start("q-sy-rand", router_cmd(1, 19082, None, dynos, "random", 50), [19082]),
            start("q-nginx", nginx_conf("q", 1, [
                (["listen 127.0.0.1:19181"], "rr", None, dynos),
                (["listen 127.0.0.1:19182"], "lc", "least_conn", dynos)]), [19181, 19182]),
            start("q-haproxy", haproxy_conf("q", 1, [
                ([f"127.0.0.1:19281"], "leastconn", dynos, 1)]), [19281]),
        ]
        rows = {}
        for load in LOADS:
            rate = load * QDYNOS / (QSERVICE_MS / 1000)
            order = configs[:]
            random.shuffle(order)
            services = []
            for name, port in order:
                dump = os.path.join(TMP, "openloop.dump")
                try:
                    r = openloop(port, rate, dump)
                except Exception as e:  # noqa: BLE001 - a failed cell is reported, not fatal
                    say(f"  {name} at {load}: {e}")
                    continue
                with open(dump) as f:
                    services += [int(l.split()[1]) / 1e6 for l in f if l.strip()]
                say(f"  load {load:.2f} {name:38} mean {r['mean_ms']:8.1f} ms "
                    f"p99 {r['p99_ms']:8.1f} ms errors {r['errors']}")
                rows[(load, name)] = r
            if services:
                mean_s = statistics.fmean(services)
                m, p99 = mmc_sojourn(QDYNOS, rate, mean_s, 0.99)
                rows[(load, "M/M/c")] = {"mean_ms": m * 1000, "p99_ms": p99 * 1000}
                sm, sp99 = central_queue_sim(QDYNOS, rate, services)
                rows[(load, "central queue")] = {"mean_ms": sm * 1000, "p99_ms": sp99 * 1000,
                                                 "service_mean_ms": mean_s * 1000}
        for p in procs:
            stop(p)
        names = [n for n, _ in configs] + ["central queue", "M/M/c"]
        out(f"**{dist} service times** (mean {QSERVICE_MS:g} ms requested; {QDYNOS} dynos × "
            f"1 request at a time; {QDURATION:g} s of Poisson arrivals per cell; "
            "latency mean / p99 in ms)")
        out()
        out("| load | req/s | measured service mean ms | " + " | ".join(names) + " |")
        out("|---|---:|---:|" + "---:|" * len(names))
        for load in LOADS:
            rate = load * QDYNOS / (QSERVICE_MS / 1000)
            cq = rows.get((load, "central queue"), {})
            cells = []
            for n in names:
                r = rows.get((load, n))
                if r and math.isinf(r["mean_ms"]):
                    cells.append("unstable (ρ ≥ 1)")
                else:
                    cells.append(f"{r['mean_ms']:.1f} / {r['p99_ms']:.1f}" if r else "—")
            out(f"| {load:.0%} | {rate:.0f} | {fmt(cq.get('service_mean_ms'))} | "
                + " | ".join(cells) + " |")
        out()

# ---------------------------------------------------------------- many routers

MROUTERS = int(ENV.get("MROUTERS", "10"))
MLOADS = [float(x) for x in ENV.get("MLOADS", "0.85").split()]
MSEEDS = [int(x) for x in ENV.get("MSEEDS", "1 2 3").split()]
# Which configurations the many-router scenario runs: `independent` (the
# bench_router launcher, one router per port, no shared state), `owners`
# (real `switchyard router` processes on one etcd, with --advertise), and
# `haproxy`.
MCONFIGS = ENV.get("MCONFIGS", "independent owners haproxy").split()
MKEY = "bench-owners-key-0123456789abcdef"


def http_status(port, host, path="/"):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode())
            head = c.recv(64).decode(errors="replace")
            return int(head.split()[1])
    except (OSError, ValueError, IndexError):
        return None


def metric_value(admin, name):
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def until(what, check, limit=60.0):
    deadline = time.time() + limit
    while not check():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_owner_cluster(n, dynos, fast_dyno):
    """etcd, one control node and `n` `switchyard router --advertise`
    processes on it, plus one router without --advertise (the single-router
    baseline, same binary, same table). Apps: `bench` on the queueing dynos
    (one request at a time each) and `fast` on one dyno with no service
    time. Returns (procs, advertised router ports, baseline port, admin
    addresses by port)."""
    procs = []
    client, peer = free_port(), free_port()
    data = os.path.join(TMP, "m-etcd")
    procs.append(start("m-etcd", ["etcd", "--data-dir", data, "--name", "bench",
                                  "--listen-client-urls", f"http://127.0.0.1:{client}",
                                  "--advertise-client-urls", f"http://127.0.0.1:{client}",
                                  "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                  "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
                       [client]))
    store = f"etcd://127.0.0.1:{client}/bench"
    env = dict(os.environ, SWITCHYARD_API_KEY=MKEY, SWITCHYARD_LOG="warn")
    api_port = free_port()
    log = open(os.path.join(TMP, "m-control.log"), "w")
    p = subprocess.Popen([SWITCHYARD, "control", "--store", store, "--api",
                          f"127.0.0.1:{api_port}", "--admin", f"127.0.0.1:{free_port()}",
                          "--data-dir", os.path.join(TMP, "m-control")],
                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    PROCS.append(p)
    procs.append(p)
    wait_port(api_port)
    api = f"http://127.0.0.1:{api_port}"
    for app, ds in [("bench", dynos), ("fast", [fast_dyno])]:
        api_call(api, MKEY, "POST", "/apps", {"name": app})
        api_call(api, MKEY, "PATCH", f"/apps/{app}/router-settings",
                 {"max_dyno_concurrency": 1 if app == "bench" else 50})
        for i, d in enumerate(ds):
            api_call(api, MKEY, "PUT", f"/apps/{app}/dynos/web.{i + 1}",
                     {"address": f"127.0.0.1:{d}", "state": "up"})
    ports = [free_port() for _ in range(n + 1)]
    admins = {}
    for i, port in enumerate(ports):
        admin = f"127.0.0.1:{free_port()}"
        admins[port] = admin
        cmd = [SWITCHYARD, "router", "--store", store, "--http", f"127.0.0.1:{port}",
               "--https", "127.0.0.1:0", "--admin", admin, "--router-threads", "1",
               "--data-dir", os.path.join(TMP, f"m-router-{port}")]
        if i < n:  # the last one is the baseline: no --advertise
            cmd += ["--advertise", f"127.0.0.1:{port}"]
        log = open(os.path.join(TMP, f"m-router-{port}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, SWITCHYARD_LOG="warn"),
                             start_new_session=True)
        PROCS.append(p)
        procs.append(p)
    for port in ports:
        wait_port(port)
        until(f"router {port} serves bench",
              lambda: http_status(port, "bench.localhost") == 200
              and http_status(port, "fast.localhost") == 200)
    for port in ports[:n]:
        until(f"router {port} sees {n} routers",
              lambda: metric_value(admins[port], "router_live_routers") == n)
    return procs, ports[:n], ports[n], admins


def owner_of(app, ports, admins):
    """The advertised router that routes `app` itself: a request through
    each, and the one whose forwarded count did not move."""
    owners = []
    for port in ports:
        before = metric_value(admins[port], "router_forwarded_requests_total") or 0
        http_status(port, f"{app}.localhost")
        after = metric_value(admins[port], "router_forwarded_requests_total") or 0
        if after == before:
            owners.append(port)
    if len(owners) != 1:
        raise RuntimeError(f"expected one owner of {app}, found {owners}")
    return owners[0]


def forwarding_overhead(ports, admins):
    """p50 / p99 of a fast request (dyno answers at once) sent to the app's
    owner directly, and through another router that forwards it there."""
    owner = owner_of("fast", ports, admins)
    other = next(p for p in ports if p != owner)
    rows = {}
    for name, port in [("direct to the owner", owner), ("through another router", other)]:
        dump = os.path.join(TMP, "openloop-fast.dump")
        cmd = [os.path.join(BIN, "openloop"), "--rate", "500", "--duration", str(QDURATION),
               "--warmup", "2", "--dump", dump, "--url", f"http://127.0.0.1:{port}/",
               "--host", "fast.localhost", "--seed", "1"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=QDURATION + 120)
        line = next((l for l in res.stdout.splitlines() if l.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"openloop failed: {res.stdout} {res.stderr}")
        rows[name] = json.loads(line)
        say(f"  fast request {name:24} p50 {rows[name]['p50_ms']:.3f} ms "
            f"p99 {rows[name]['p99_ms']:.3f} ms errors {rows[name]['errors']}")
    return rows


MWRK_S = int(ENV.get("MWRK_S", "5"))


def forwarding_throughput(ports, admins):
    """Closed-loop small requests (wrk, 16 connections) to the fast app,
    straight to its owner and through another router: what one owner
    worker thread carries for one app, and what the extra hop costs."""
    owner = owner_of("fast", ports, admins)
    other = next(p for p in ports if p != owner)
    rows = {}
    for name, port in [("straight to the owner", owner), ("through another router", other)]:
        r = run_wrk(f"http://127.0.0.1:{port}/", 16, MWRK_S, ["Host: fast.localhost"])
        rows[name] = r
        say(f"  wrk {name:24} {r['rps']:9.0f} req/s p50 {r['p50']:.2f} ms "
            f"p99 {r['p99']:.2f} ms errors {r['errors']}")
    return rows


def many_routers():
    """The queueing scenario with the client spreading requests at random
    over several routers (clients behind DNS round-robin): each router sees
    a share of the app's traffic. Every configuration gets the same arrival
    sequence (same seed); p99 is compared with the ideal central queue for
    the service times measured in that very run."""
    dynos = [QDYNO + i for i in range(QDYNOS)]
    n = MROUTERS
    sy_one, sy_many = 19401, list(range(19410, 19410 + n))
    ha_one, ha_many = 19501, list(range(19510, 19510 + n))
    fast_dyno = QDYNO + QDYNOS
    configs, hosts = [], {}
    procs = [
        start("m-dynos", [os.path.join(BIN, "dyno"), "--port", str(QDYNO), "--count",
                          str(QDYNOS), "--threads", "1", "--concurrency", "1",
                          "--service", str(QSERVICE_MS), "--dist", "exp"], dynos),
    ]
    if "independent" in MCONFIGS:
        configs += [("Switchyard, 1 router", [sy_one]),
                    (f"Switchyard, {n} independent routers", sy_many)]
        procs.append(start("m-sy-one", router_cmd(1, sy_one, None, dynos, "least-outstanding",
                                                  1), [sy_one]))
        for p in sy_many:
            procs.append(start(f"m-sy-{p}", router_cmd(1, p, None, dynos, "least-outstanding",
                                                       1), [p]))
    overhead = capacity = None
    if "owners" in MCONFIGS:
        procs.append(start("m-fast", [os.path.join(BIN, "dyno"), "--port", str(fast_dyno),
                                      "--threads", "1"], [fast_dyno]))
        cluster, owned, baseline, admins = start_owner_cluster(n, dynos, fast_dyno)
        procs += cluster
        one = f"switchyard router (etcd), 1 router"
        many = f"switchyard router --advertise (etcd), {n} routers, owner routing"
        configs += [(one, [baseline]), (many, owned)]
        hosts[one] = hosts[many] = "bench.localhost"
        overhead = forwarding_overhead(owned, admins)
        if MWRK_S > 0:
            capacity = forwarding_throughput(owned, admins)
    if "haproxy" in MCONFIGS:
        configs += [("HAProxy leastconn maxconn 1, 1 router", [ha_one]),
                    (f"HAProxy leastconn maxconn 1, {n} independent routers", ha_many)]
        procs.append(start("m-haproxy", haproxy_conf("m", 1, [
            ([f"127.0.0.1:{p}"], "leastconn", dynos, 1) for p in [ha_one] + ha_many]),
            [ha_one] + ha_many))
    results = {}
    for load in MLOADS:
        rate = load * QDYNOS / (QSERVICE_MS / 1000)
        for seed in MSEEDS:
            order = configs[:]
            random.shuffle(order)
            services = []
            for name, ports in order:
                dump = os.path.join(TMP, "openloop.dump")
                try:
                    r = openloop(ports, rate, dump, seed, hosts.get(name))
                except Exception as e:  # noqa: BLE001 - a failed cell is reported, not fatal
                    say(f"  {name} at {load}: {e}")
                    continue
                with open(dump) as f:
                    services += [int(l.split()[1]) / 1e6 for l in f if l.strip()]
                say(f"  load {load:.2f} seed {seed} {name:52} p50 {r['p50_ms']:7.1f} ms "
                    f"p99 {r['p99_ms']:7.1f} ms errors {r['errors']}")
                results.setdefault((load, name), []).append(r)
            if services:
                _, ideal = central_queue_sim(QDYNOS, rate, services)
                results.setdefault((load, "ideal"), []).append(ideal * 1000)
    if "owners" in MCONFIGS:
        for outcome in ["forwarded", "fallback", "failed", "hop_limit"]:
            total = sum(metric_value(a, f'router_forwarded_requests_total{{outcome="{outcome}"}}')
                        or 0 for a in admins.values())
            say(f"  owner routing: {outcome} {total:.0f}")
    for p in procs:
        stop(p)
    out(f"**Many routers** ({QDYNOS} dynos × 1 request at a time, exponential service "
        f"times with a {QSERVICE_MS:g} ms mean, Poisson arrivals, each request sent to a "
        f"router picked at random; {QDURATION:g} s per cell, seeds {MSEEDS}, medians over "
        "seeds; ideal = one central FIFO for the service times measured in the same run)")
    out()
    out("| load | configuration | p50 ms | p99 ms | p99 / ideal |")
    out("|---|---|---:|---:|---:|")
    for load in MLOADS:
        ideal = results.get((load, "ideal"))
        ideal_ms = statistics.median(ideal) if ideal else None
        for name, _ in configs:
            rs = results.get((load, name))
            if not rs:
                out(f"| {load:.0%} | {name} | — | — | — |")
                continue
            p50 = statistics.median(r["p50_ms"] for r in rs)
            p99 = statistics.median(r["p99_ms"] for r in rs)
            ratio = p99 / ideal_ms if ideal_ms else None
            out(f"| {load:.0%} | {name} | {p50:.1f} | {p99:.1f} | {fmt(ratio)} |")
        out(f"| {load:.0%} | ideal central queue | | {fmt(ideal_ms, 1)} | 1.00 |")
    out()
    if overhead:
        out(f"**Forwarding a fast request** (dyno answers at once; 500 req/s open loop for "
            f"{QDURATION:g} s, one router owner of the app, {n} routers on etcd)")
        out()
        out("| path | p50 ms | p99 ms |")
        out("|---|---:|---:|")
        for name, r in overhead.items():
            out(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
        rs = list(overhead.values())
        out(f"| added by forwarding | {rs[1]['p50_ms'] - rs[0]['p50_ms']:.3f} | "
            f"{rs[1]['p99_ms'] - rs[0]['p99_ms']:.3f} |")
        out()
    if capacity:
        out(f"**Small requests, closed loop** (wrk, 16 connections, {MWRK_S} s; every router "
            "one worker thread)")
        out()
        out("| path | req/s | p50 ms | p99 ms |")
        out("|---|---:|---:|---:|")
        for name, r in capacity.items():
            out(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} |")
        out()

# ---------------------------------------------------------------- logplex

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """examples/syslog_sink.rs with `ports` listeners, driven over stdin."""

    def __init__(self, name, ports):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "syslog_sink"), "--ports", str(ports), "--report-ms", "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(TMP, f"{name}.log"), "w"), text=True,
            start_new_session=True)
        PROCS.append(self.proc)
        self.lines = queue.Queue()
        self.ports = []
        while len(self.ports) < ports:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("syslog_sink exited before listening")
            if line.startswith("listening "):
                self.ports.append(int(line.rsplit(":", 1)[1]))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def _ask(self, cmd, want):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.lines.get(timeout=10)
            if want in line:
                return json.loads(line)

    def reset(self):
        self._ask("reset", '"reset"')

    def status(self):
        return self._ask("report", '"t_ns"')

    def wait(self, expect, idle=2.0, limit=300.0):
        """Polls until every port has `expect` frames, or nothing new
        arrived for `idle` seconds. Returns the last status."""
        deadline = time.time() + limit
        last_total, last_change = -1, time.time()
        while True:
            st = self.status()
            if all(p["frames"] >= expect for p in st["ports"]):
                return st
            total = st["frames"] + sum(p["l10"] for p in st["ports"])
            if total != last_total:
                last_total, last_change = total, time.time()
            elif time.time() - last_change > idle or time.time() > deadline:
                return st
            time.sleep(0.05)


def api_call(base, key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "Accept": "application/vnd.heroku+json; version=3"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def metric_sums(admin, prefix):
    """Sums of each `logplex_drain_*` counter in /metrics, by name."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            sums[name] = sums.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return sums


def start_switchyard(name, drain_ports, binary=None):
    """The release `switchyard serve` (or `binary`) on free ports with one
    app and a syslog drain per port. Returns (proc, syslog port, token,
    admin addr)."""
    data = os.path.join(TMP, f"{name}-data")
    key = "bench-logplex-key-0123456789abcdef"
    log = os.path.join(TMP, f"{name}.log")
    cmd = [binary or SWITCHYARD, "serve", "--data-dir", data]
    for flag in ["--http", "--https", "--api", "--logplex-http", "--syslog", "--syslog-tls",
                 "--admin"]:
        cmd += [flag, "127.0.0.1:0"]
    env = dict(os.environ, SWITCHYARD_API_KEY=key, SWITCHYARD_LOG="warn")
    p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    PROCS.append(p)
    addrs, deadline = {}, time.time() + 30
    while len(addrs) < 8:
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"switchyard did not start: {open(log).read()}")
        for line in open(log):
            if line.startswith("listening role="):
                role, addr = line.split()[1][5:], line.split()[2][5:]
                addrs[role] = addr
        time.sleep(0.05)
    api = f"http://{addrs['api']}"
    api_call(api, key, "POST", "/apps", {"name": "bench"})
    tokens = api_call(api, key, "GET", "/apps/bench/log-tokens")
    token = next(t["token"] for t in tokens if t.get("name") == "app")
    for port in drain_ports:
        api_call(api, key, "POST", "/apps/bench/log-drains", {"url": f"syslog://127.0.0.1:{port}"})
    return p, int(addrs["syslog-tcp"].rsplit(":", 1)[1]), token, addrs["admin"]


RSYSLOG_CONF = """
global(workDirectory="@DIR@" maxMessageSize="64k")
module(load="imptcp")
# Delayable TCP input: when the queue is full the reader waits (up to the
# enqueue timeout) instead of dropping.
main_queue(queue.type="FixedArray" queue.size="100000" queue.timeoutEnqueue="600000")
input(type="imptcp" address="127.0.0.1" port="@PORT@" ruleset="drains")
ruleset(name="drains") {
@ACTIONS@}
"""


def start_rsyslog(name, drain_ports):
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    actions = ""
    for p in drain_ports:
        q = ""
        if RSYSLOG_QUEUE == "action":
            q = (' queue.type="LinkedList" queue.size="100000" queue.timeoutEnqueue="600000"'
                 ' queue.dequeueBatchSize="1024"')
        actions += (f'  action(type="omfwd" target="127.0.0.1" port="{p}" protocol="tcp"'
                    f' TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"'
                    f' action.resumeRetryCount="-1"{q})\n')
    conf = (RSYSLOG_CONF.replace("@DIR@", d).replace("@PORT@", str(port))
            .replace("@ACTIONS@", actions))
    path = os.path.join(d, "rsyslog.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = start(name, ["rsyslogd", "-n", "-f", path, "-i", os.path.join(d, "rsyslogd.pid")],
              [port])
    return p, port


def blast(port, token, lines, rate=0.0):
    cmd = [os.path.join(BIN, "syslog_blast"), "--target", f"127.0.0.1:{port}", "--lines",
           str(lines), "--connections", str(LCONNS), "--token", token, "--msg-bytes",
           str(MSG_BYTES), "--rate", str(rate)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"syslog_blast failed: {res.stdout} {res.stderr}")


def logplex_run(t, drains, n):
    sink, proc = t["sink"], t["proc"]
    sink.reset()
    before = metric_sums(t["admin"], "logplex_drain_") if t.get("admin") else {}
    perf = None
    if PERF_DIR:
        os.makedirs(PERF_DIR, exist_ok=True)
        perf = subprocess.Popen(
            ["perf", "record", "-F", "999", "-g", "-p", str(proc.pid), "-o",
             os.path.join(PERF_DIR, f"{t['name']}-{drains}.data")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    cpu0 = tree_cpu(proc.pid)
    sent = blast(t["port"], t["token"], n)
    st = sink.wait(n)
    cpu = tree_cpu(proc.pid) - cpu0
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    got = [p["frames"] for p in st["ports"]]
    last = max(p["last_ns"] for p in st["ports"])
    window = (last - sent["start_ns"]) / 1e9 if last else None
    r = {"sent": sent["sent"], "send_rate": sent["lines_per_s"], "got": got,
         "delivered_rate": sum(got) / window if window else 0.0,
         "cpu1m": cpu / sent["sent"] * 1e6, "l10": sum(p["l10_dropped"] for p in st["ports"])}
    if t.get("admin"):
        after = metric_sums(t["admin"], "logplex_drain_")
        delta = lambda k: after.get(k, 0) - before.get(k, 0)
        r["dropped"] = int(delta("logplex_drain_dropped_lines_total"))
        r["accepted"] = int(delta("logplex_drain_accepted_lines_total"))
    else:
        r["dropped"] = sent["sent"] * drains - sum(got)
    r["missing"] = sent["sent"] * drains - sum(got)
    return r


def logplex():
    out("## Logplex throughput")
    out()
    say(f"== logplex: {LINES_N} lines over {LCONNS} connection(s), drains {LDRAINS}, "
        f"rsyslog queue {RSYSLOG_QUEUE}")
    results = {}
    for drains in LDRAINS:
        targets = {}
        for target in LTARGETS:
            # `label=/path/to/switchyard` runs another build, e.g. a baseline.
            name, _, binary = target.partition("=")
            sink = Sink(f"sink-{name}-{drains}", drains)
            if name == "switchyard" or binary:
                proc, port, token, admin = start_switchyard(f"{name}-{drains}", sink.ports,
                                                            binary or None)
                targets[name] = {"name": name, "sink": sink, "proc": proc, "port": port,
                                 "token": token, "admin": admin}
            elif name == "rsyslog":
                proc, port = start_rsyslog(f"rsyslog-{drains}", sink.ports)
                # The same frames as for Switchyard; rsyslog passes APP-NAME through.
                targets[name] = {"name": name, "sink": sink, "proc": proc, "port": port,
                                 "token": "t.00000000-0000-4000-8000-000000000000"}
            else:
                raise ValueError(name)
        # Warm up: connections to every drain, allocations, caches.
        for name, t in targets.items():
            warm = min(20_000, LINES_N)
            t["sink"].reset()
            blast(t["port"], t["token"], warm, rate=warm * 2)
            st = t["sink"].wait(warm)
            say(f"  warm-up {name} {drains} drain(s): {[p['frames'] for p in st['ports']]}")
        for rnd in range(ROUNDS):
            order = list(targets)
            random.shuffle(order)
            for name in order:
                try:
                    r = logplex_run(targets[name], drains, LINES_N)
                except Exception as e:  # noqa: BLE001 - a failed cell is reported, not fatal
                    say(f"  {name} {drains} drain(s): {e}")
                    continue
                say(f"  round {rnd + 1} {name:10} {drains:2} drain(s) "
                    f"{r['delivered_rate']:10.0f} lines/s delivered, sent at "
                    f"{r['send_rate']:.0f}/s, per drain {min(r['got'])}..{max(r['got'])} "
                    f"of {r['sent']}, dropped {r['dropped']}, CPU {r['cpu1m']:.2f} s/1M")
                results.setdefault((drains, name), []).append(r)
        for t in targets.values():
            stop(t["proc"])
            stop(t["sink"].proc)
    report_logplex(results)


def report_logplex(results):
    out(f"**TCP syslog in → N TCP syslog drains** ({LINES_N:,} lines of {MSG_BYTES} B "
        f"over {LCONNS} connection(s); {ROUNDS} interleaved rounds, medians; rsyslog "
        f"queue: {RSYSLOG_QUEUE})")
    out()
    out("| drains | target | lines/s delivered | input lines/s | received per drain (min / max) "
        "| dropped | CPU s / 1M lines | vs rsyslog |")
    out("|---:|---|---:|---:|---:|---:|---:|---:|")
    for drains in LDRAINS:
        base = median_of(results.get((drains, "rsyslog"), []), "delivered_rate")
        for name in [t.partition("=")[0] for t in LTARGETS]:
            runs = results.get((drains, name), [])
            if not runs:
                out(f"| {drains} | {name} | failed | | | | | |")
                continue
            rate = median_of(runs, "delivered_rate")
            mid = sorted(runs, key=lambda r: r["delivered_rate"])[len(runs) // 2]
            pct = lambda x: f"{x / mid['sent']:.1%}"
            ratio = f"{rate / base:.2f}×" if base else "—"
            out(f"| {drains} | {name} | {rate:,.0f} | {median_of(runs, 'send_rate'):,.0f} | "
                f"{min(mid['got']):,} / {max(mid['got']):,} ({pct(min(mid['got']))} / "
                f"{pct(max(mid['got']))}) | {mid['dropped']:,} | "
                f"{fmt(median_of(runs, 'cpu1m'))} | {ratio} |")
    out()


def main():
    global CERT, KEY, COMBINED
    CERT, KEY, COMBINED = make_cert()
    say(f"scratch dir {TMP}; {NPROC} cores; load {open('/proc/loadavg').read().strip()}")
    try:
        if "throughput" in PARTS:
            out("## Throughput and latency")
            out()
            throughput()
        if "queueing" in PARTS:
            out("## Queueing (single-request dynos, open-loop Poisson arrivals)")
            out()
            queueing()
        if "routers" in PARTS:
            out("## Many routers (queueing across routers)")
            out()
            many_routers()
        if "logplex" in PARTS:
            logplex()
    finally:
        stop_all()
        if OUT:
            with open(OUT, "w") as f:
                f.write("\n".join(LINES) + "\n")
        if not ENV.get("KEEP_TMP"):
            shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
