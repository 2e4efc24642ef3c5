"""Instructions per line of `switchyard serve` under callgrind: a
deterministic measure of logplex's CPU per line, for comparing builds on a
machine whose wall-clock numbers are noisy.

One app with DRAINS `syslog://` drains (one `examples/syslog_sink.rs` port
each), set up through the control API as the load harness does
(benches/load/harness.py, whose helpers this reuses), then LINES
octet-counted RFC 5424 lines from `examples/syslog_blast.rs` at RATE
lines/s, slow enough that nothing is dropped under valgrind. Only the
lines are counted: instrumentation is switched on after a warm-up that
opens the drain connections, and off once every drain has every line.
Kernel time is not in the count. At a low rate batches are small, so
per-batch costs weigh more than at full speed.

    CARGO_TARGET_DIR=/work/target cargo build --release --bin switchyard \
        --example syslog_blast --example syslog_sink
    SWITCHYARD_BENCH_BIN=$CARGO_TARGET_DIR/release/examples \
        python3 logplex/benches/callgrind.py $CARGO_TARGET_DIR/release/switchyard 10 20000 3000

Prints `drains=… sent=… got min/max=…/… Ir=… Ir/line=…`; with KEEPCG=path
the callgrind output is kept there for callgrind_annotate.
"""
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../benches/load"))
import harness as h  # noqa: E402

binary, drains, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out = os.path.join(h.TMP, "callgrind.out")
wrap = os.path.join(h.TMP, "valgrind.sh")
with open(wrap, "w") as f:
    f.write("#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
            f"--callgrind-out-file={out} {binary} \"$@\"\n")
os.chmod(wrap, 0o755)


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


try:
    sink = h.Sink("sink", drains)
    proc, port, token, _admin = h.start_switchyard("switchyard", sink.ports, binary=wrap)
    h.blast(port, token, 2000, rate=2000)
    sink.wait(2000)
    sink.reset()
    control(proc.pid, "-i", "on")
    sent = h.blast(port, token, n, rate=rate)
    st = sink.wait(n, idle=5.0)
    control(proc.pid, "-i", "off")
    control(proc.pid, "-d")
    got = [p["frames"] for p in st["ports"]]
    dump = max(glob.glob(out + "*"), key=os.path.getmtime)
    ir = 0
    for line in open(dump):
        if line.startswith(("summary:", "totals:")):
            ir = int(line.split()[1])
    print(f"drains={drains} sent={sent['sent']} got min/max={min(got)}/{max(got)} "
          f"Ir={ir} Ir/line={ir / sent['sent']:.0f}", flush=True)
    if os.environ.get("KEEPCG"):
        shutil.copy(dump, os.environ["KEEPCG"])
finally:
    h.stop_all()
    shutil.rmtree(h.TMP, ignore_errors=True)
