#!/usr/bin/env python3
"""Python peer for the worker-start section: cold start of a 1-worker `multiprocessing.Pool`,
from creating the pool to the first task's result back (that is, the worker ready and proven
so), with the fork and the spawn start methods.

    coldstart.py --reps N

Prints {"fork_ms": [...], "spawn_ms": [...]} on stdout.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time


def noop(x):
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    out = {}
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            pool = ctx.Pool(1)
            pool.apply(noop, (0,))
            times.append((time.perf_counter() - t0) * 1000.0)
            pool.close()
            pool.join()
        out[f"{method}_ms"] = times
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
