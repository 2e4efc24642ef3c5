#!/usr/bin/env python3
"""Convergence of a Switchyard cluster on one machine.

Starts etcd, CONTROLS `switchyard control` nodes and ROUTERS `switchyard
router --store etcd://…` processes (the README's "Running several nodes"),
creates CHANGES apps, then for each app registers its dyno through the
control nodes in turn and measures, on every router at once, the time from
sending the write to the first 200 the router answers for the app (each
router is polled on its own keep-alive connection by its own thread). A
change counts as routable on a router the moment that router answers with
the new dyno; nothing is sampled.

    python3 benches/cluster/convergence.py BIN

BIN is the `switchyard` binary (release). Knobs (environment): CHANGES
(1000), ROUTERS (3), CONTROLS (2). Prints a markdown table: write
latency (the control node's 2xx, which includes etcd's fsync), write →
routable on each router and on all of them, and acknowledged → routable
on all of them (the propagation alone; 0 when every router routed the
change before the client had its answer).
"""

import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "bench-key-0123456789abcdef"


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


class Etcd:
    """etcd on random free-looking ports, retried on 'address in use'."""

    def __init__(self, workdir):
        for _ in range(20):
            client = random.randrange(10000, 30000)
            data = os.path.join(workdir, "etcd-%d" % client)
            c, p = "http://127.0.0.1:%d" % client, "http://127.0.0.1:%d" % (client + 1)
            proc = subprocess.Popen(
                ["etcd", "--name=b", "--data-dir=" + data,
                 "--listen-client-urls=" + c, "--advertise-client-urls=" + c,
                 "--listen-peer-urls=" + p, "--initial-advertise-peer-urls=" + p,
                 "--initial-cluster=b=" + p],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            want = "serving insecure client requests on 127.0.0.1:%d" % client
            ok = False
            for line in proc.stderr:
                if want in line:
                    ok = True
                    break
                if "address already in use" in line:
                    break
            if ok:
                threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
                self.proc, self.endpoint = proc, "127.0.0.1:%d" % client
                return
            proc.kill()
            proc.wait()
        raise SystemExit("etcd did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Node:
    """A `switchyard` process; its announced addresses by role."""

    def __init__(self, binary, args, roles, env=None):
        self.proc = subprocess.Popen(
            [binary] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=dict(os.environ, **(env or {})))
        self.addrs = {}
        for line in self.proc.stdout:
            m = re.match(r"listening role=(\S+) addr=(\S+)", line)
            if m:
                self.addrs[m.group(1)] = m.group(2)
            if all(r in self.addrs for r in roles):
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def port(self, role):
        return int(self.addrs[role].rsplit(":", 1)[1])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Dyno(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    if res.status >= 300:
        raise SystemExit("%s %s: %d %s" % (method, path, res.status, data[:200]))
    return data


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/switchyard"
    changes = int(os.environ.get("CHANGES", "1000"))
    n_routers = int(os.environ.get("ROUTERS", "3"))
    n_controls = int(os.environ.get("CONTROLS", "2"))
    work = tempfile.mkdtemp(prefix="switchyard-convergence-")
    procs = []
    try:
        etcd = Etcd(work)
        store = "etcd://%s/bench" % etcd.endpoint
        controls = []
        for i in range(n_controls):
            controls.append(Node(binary, [
                "control", "--store", store, "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                "--data-dir", os.path.join(work, "control%d" % i)],
                ["api", "admin"], {"SWITCHYARD_API_KEY": KEY}))
        routers = []
        for i in range(n_routers):
            routers.append(Node(binary, [
                "router", "--store", store, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                "--admin", "127.0.0.1:0", "--router-threads", "1",
                "--data-dir", os.path.join(work, "router%d" % i)],
                ["router-http", "admin"]))
        procs = controls + routers
        dyno = ThreadingHTTPServer(("127.0.0.1", 0), Dyno)
        threading.Thread(target=dyno.serve_forever, daemon=True).start()
        dyno_addr = "127.0.0.1:%d" % dyno.server_address[1]

        for i in range(changes):
            call(controls[i % n_controls].port("api"), "POST", "/apps", {"name": "conv-%d" % i})

        write_ms, routable_ms, after_ack_ms = [], [[] for _ in routers], []
        for i in range(changes):
            host = "conv-%d.localhost" % i
            conns = [http.client.HTTPConnection("127.0.0.1", r.port("router-http"), timeout=10)
                     for r in routers]
            done = [None] * len(routers)
            start = threading.Event()
            t0 = [0.0]

            def poll(k):
                start.wait()
                while True:
                    conns[k].request("GET", "/", headers={"Host": host})
                    res = conns[k].getresponse()
                    res.read()
                    if res.status == 200:
                        done[k] = time.perf_counter()
                        return
                    if res.getheader("Connection", "").lower() == "close":
                        conns[k].close()

            threads = [threading.Thread(target=poll, args=(k,)) for k in range(len(routers))]
            for t in threads:
                t.start()
            node = controls[i % n_controls].port("api")
            t0[0] = time.perf_counter()
            start.set()
            call(node, "PUT", "/apps/conv-%d/dynos/web.1" % i, {"address": dyno_addr})
            acked = time.perf_counter()
            for t in threads:
                t.join()
            for c in conns:
                c.close()
            write_ms.append((acked - t0[0]) * 1000)
            for k in range(len(routers)):
                routable_ms[k].append((done[k] - t0[0]) * 1000)
            # Routable everywhere before the client even had its answer
            # counts as 0.
            after_ack_ms.append(max(0.0, (max(done) - acked) * 1000))

        every = [v for r in routable_ms for v in r]
        slowest = [max(r[i] for r in routable_ms) for i in range(changes)]
        print("| %d changes, %d control nodes, %d routers on etcd | p50 ms | p99 ms | max ms |"
              % (changes, n_controls, n_routers))
        print("|---|---:|---:|---:|")
        print("| write acknowledged (2xx from the control node) | %.2f | %.2f | %.2f |"
              % (pct(write_ms, 50), pct(write_ms, 99), max(write_ms)))
        print("| write → routable, each router (%d samples) | %.2f | %.2f | %.2f |"
              % (len(every), pct(every, 50), pct(every, 99), max(every)))
        print("| write → routable on every router | %.2f | %.2f | %.2f |"
              % (pct(slowest, 50), pct(slowest, 99), max(slowest)))
        print("| write acknowledged → routable on every router | %.2f | %.2f | %.2f |"
              % (pct(after_ack_ms, 50), pct(after_ack_ms, 99), max(after_ack_ms)))
        for k, r in enumerate(routable_ms):
            print("| router %d | %.2f | %.2f | %.2f |" % (k + 1, pct(r, 50), pct(r, 99), max(r)))
        dyno.shutdown()
    finally:
        for p in procs:
            p.stop()
        try:
            etcd.stop()
        except NameError:
            pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
