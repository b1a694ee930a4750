#!/usr/bin/env python3
"""Peak resident memory of the supervisor and of its workers while one command prints 1 GiB.

`bulkhead run --cmd` runs two commands on two workers: the first prints BYTES (1 GiB) of
zeros, the second waits for a file that this script creates only once the whole first
output has reached stdout (a file here). While the second still runs, the supervisor and
both workers are alive, and their VmHWM (peak resident set, from /proc/PID/status) covers
the whole time the 1 GiB travelled: command -> spool file -> supervisor -> stdout.

Usage: big_output.py [BULKHEAD] (default target/release/bulkhead). Prints one JSON line.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/bulkhead"
BYTES = int(os.environ.get("BYTES", 1 << 30))
LIMIT = 64 << 20


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


with tempfile.TemporaryDirectory(prefix="bh-big-") as d:
    go, out = os.path.join(d, "go"), os.path.join(d, "out")
    cmd = f"if [ {{}} = 1 ]; then head -c {BYTES} /dev/zero; else while [ ! -e {go} ]; do sleep 0.05; done; fi"
    with open(out, "wb") as stdout:
        p = subprocess.Popen(
            [BIN, "run", "--progress", "never", "-j", "2", "--cmd", cmd],
            stdin=subprocess.PIPE, stdout=stdout, env=dict(os.environ, TMPDIR=d),
        )
        p.stdin.write(b"1\n2\n")
        p.stdin.close()
        t0 = time.monotonic()
        while os.path.getsize(out) < BYTES:
            if p.poll() is not None or time.monotonic() - t0 > 600:
                sys.exit(f"the run ended or stalled before printing {BYTES} bytes")
            time.sleep(0.05)
        secs = time.monotonic() - t0
        workers = children(p.pid)
        sup = hwm(p.pid)
        work = {w: hwm(w) for w in workers}
        open(go, "w").close()
        code = p.wait()
    ok = code == 0 and sup < LIMIT and all(v < LIMIT for v in work.values())
    print(json.dumps({
        "bytes": BYTES, "seconds_to_stdout": round(secs, 2), "exit": code,
        "supervisor_peak_rss_mib": round(sup / 2**20, 1),
        "worker_peak_rss_mib": sorted(round(v / 2**20, 1) for v in work.values()),
        "limit_mib": LIMIT >> 20, "within_limit": ok,
    }))
    sys.exit(0 if ok else 1)
