#!/usr/bin/env python3
"""Resident memory per idle client connection of the data plane as it ships
(examples/bench_router: the binary's allocator, mimalloc), plain HTTP and
HTTPS: N connections that have sent nothing, then one keep-alive request
each, left idle.

    cargo build --release --example bench_router --example dyno
    python3 benches/load/idle_memory.py target/release/examples/bench_router 9000

N needs N + ~100 descriptors in this process (`ulimit -n`). The router's
RSS is read from /proc before and after each step; each connection is
given 3 s after its response to be parked (RouterConfig::park_idle_after).
"""
import os
import socket
import ssl
import subprocess
import sys
import time

exe, n = sys.argv[1], int(sys.argv[2])
DYNO_PORT = 18999
dyno = subprocess.Popen(
    [os.path.join(os.path.dirname(exe), "dyno"), "--port", str(DYNO_PORT), "--threads", "1"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
router = subprocess.Popen(
    [exe, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
     "--dyno", f"127.0.0.1:{DYNO_PORT}", "--threads", "1"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addrs = {}
while len(addrs) < 2:
    words = router.stdout.readline().split()
    if words and words[0] == "listening":
        host, port = words[2].split("=")[1].rsplit(":", 1)
        addrs[words[1].split("=")[1]] = (host, int(port))

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
try:
    measure("http")
    measure("https")
finally:
    router.terminate()
    router.wait()
    dyno.terminate()
