#!/usr/bin/env python3
"""Resident memory per idle client connection of the data plane as it ships
(examples/bench_router: the binary's allocator, mimalloc), plain HTTP and
HTTPS: N connections that have sent nothing, then one keep-alive request
each, left idle.

    cargo build --release --example bench_router --example dyno
    python3 benches/load/idle_memory.py target/release/examples/bench_router 9000

The shipped binary the same way (`switchyard serve --router-threads 1`,
one app `bench` on the dyno, its router lines into its logplex channel;
the process's RSS, all roles):

    cargo build --release --bin switchyard --example dyno
    python3 benches/load/idle_memory.py target/release/switchyard 5000

`serve` sizes its cap on client connections from the file-descriptor
limit (5,857 with 20,000 descriptors, in its log at start): keep N below
it. Past the cap, new connections wait in the accept queue until idle
ones time out and close, so fewer than N are held and the count per
connection comes out too small (and the run takes minutes).

N needs N + ~100 descriptors in this process (`ulimit -n`). The router's
RSS is read from /proc before and after each step; each connection is
given 3 s after its response to be parked (RouterConfig::park_idle_after).
"""
import atexit
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

exe, n = sys.argv[1], int(sys.argv[2])
serve = os.path.basename(exe) == "switchyard"
DYNO_PORT = 18999
examples = os.path.join(os.path.dirname(exe), "examples") if serve else os.path.dirname(exe)
dyno = subprocess.Popen(
    [os.path.join(examples, "dyno"), "--port", str(DYNO_PORT), "--threads", "1"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
atexit.register(dyno.terminate)
if serve:
    KEY = "idle-memory-key-0123456789abcdef"
    data = tempfile.mkdtemp(prefix="idle-memory-")
    router = subprocess.Popen(
        [exe, "serve", "--data-dir", data, "--router-threads", "1",
         "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--api", "127.0.0.1:0",
         "--logplex-http", "127.0.0.1:0", "--syslog", "127.0.0.1:0",
         "--syslog-tls", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        env={**os.environ, "SWITCHYARD_API_KEY": KEY, "SWITCHYARD_LOG": "warn"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    atexit.register(shutil.rmtree, data, ignore_errors=True)
    wanted = {"router-http", "router-https", "api"}
else:
    router = subprocess.Popen(
        [exe, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
         "--dyno", f"127.0.0.1:{DYNO_PORT}", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wanted = {"router", "router-tls"}
# Registered last, so run first: the router goes before its data dir.
atexit.register(router.wait)
atexit.register(router.terminate)
addrs = {}
while not wanted <= addrs.keys():
    line = router.stdout.readline()
    if not line:
        sys.exit(f"{exe} exited before it listened")
    words = line.split()
    if words and words[0] == "listening":
        host, port = words[2].split("=")[1].rsplit(":", 1)
        addrs[words[1].split("=")[1]] = (host, int(port))
if serve:
    # The rest of its output is read and dropped, so that it never blocks
    # on a full pipe.
    threading.Thread(target=router.stdout.read, daemon=True).start()
    api = "http://%s:%d" % addrs["api"]

    def call(method, path, body):
        req = urllib.request.Request(
            api + path, method=method, data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        urllib.request.urlopen(req).read()

    call("POST", "/apps", {"name": "bench"})
    call("PATCH", "/apps/bench/router-settings",
         {"max_dyno_concurrency": 10000, "max_in_flight": 100000})
    call("PUT", "/apps/bench/dynos/web.1", {"address": f"127.0.0.1:{DYNO_PORT}"})
    addrs["router"], addrs["router-tls"] = addrs["router-http"], addrs["router-https"]

tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
tls.set_alpn_protocols(["http/1.1"])


def rss():
    with open(f"/proc/{router.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024


def connect(kind):
    s = socket.create_connection(addrs["router" if kind == "http" else "router-tls"])
    return tls.wrap_socket(s, server_hostname="bench.localhost") if kind == "https" else s


def request(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        # An app at its connection cap answers H22 (503) and closes: such
        # a connection is not held, and would make the count per
        # connection look smaller than it is.
        sys.exit(f"not a 200: {head.splitlines()[0]!r}")
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length")]
    while len(body) < (length[0] if length else 0):
        body += s.recv(65536)


def measure(kind):
    warm = [connect(kind) for _ in range(64)]
    for s in warm:
        request(s)
        s.close()
    time.sleep(1)
    base = rss()
    conns = [connect(kind) for _ in range(n)]
    time.sleep(2)
    silent = rss()
    for s in conns:
        request(s)
    time.sleep(3)
    kept = rss()
    print(f"| {kind} | {n} | {base // 1024} | {(silent - base) // n} | {(kept - base) // n} |")
    for s in conns:
        s.close()
    time.sleep(1)


print("| listener | connections | baseline KiB | silent, B each | idle after one request, B each |")
print("|---|---:|---:|---:|---:|")
measure("http")
measure("https")
