#!/usr/bin/env python3
"""Python peer for the idle-worker memory section: the resident size of an idle
`multiprocessing.Pool` worker (fork and spawn start methods), after it has run a few no-ops.

    idle_rss.py

Prints {"fork": {"rss_kib", "pss_kib"}, "spawn": {...}} on stdout.
"""
import json
import multiprocessing as mp
import sys
import time


def noop(x):
    return x


def field(path, name):
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    out = {}
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(1) as pool:
            for i in range(10):
                pool.apply(noop, (i,))
            time.sleep(0.2)
            pid = pool._pool[0].pid
            out[method] = {
                "rss_kib": field(f"/proc/{pid}/status", "VmRSS"),
                "pss_kib": field(f"/proc/{pid}/smaps_rollup", "Pss"),
            }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
