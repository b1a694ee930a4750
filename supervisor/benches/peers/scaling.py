#!/usr/bin/env python3
"""Python peer for the scaling section: a pure-Python CPU loop on `Pool(P).map`, one task per
message, timed from the first task submitted to the last result (pool start excluded).

    scaling.py --procs P --tasks T --n N

Prints {"procs", "tasks", "secs", "task_ms"} on stdout (task_ms: median time of one task in
the worker).
"""
import argparse
import json
import multiprocessing as mp
import sys
import time


def burn(n):
    t0 = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return (time.perf_counter() - t0) * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    a = ap.parse_args()
    with mp.get_context("fork").Pool(a.procs) as pool:
        pool.map(burn, [1000] * a.procs * 4, chunksize=1)  # every worker up and warm
        t0 = time.perf_counter()
        ms = pool.map(burn, [a.n] * a.tasks, chunksize=1)
        secs = time.perf_counter() - t0
    ms.sort()
    json.dump({"procs": a.procs, "tasks": a.tasks, "secs": secs, "task_ms": ms[len(ms) // 2]}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
