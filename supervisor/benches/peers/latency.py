#!/usr/bin/env python3
"""Python peer for the round-trip section: `Pool(1).apply` of a no-op, one task at a time.

    latency.py --samples N [--warmup W]

Prints {"samples_us": [...]} on stdout: each round trip in microseconds.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time


def noop(task):
    return {"id": task["id"], "status": "ok"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    a = ap.parse_args()
    samples = []
    with mp.get_context("fork").Pool(1) as pool:
        for i in range(a.warmup):
            pool.apply(noop, ({"id": f"w{i}", "kind": "noop"},))
        clock = time.perf_counter_ns
        for i in range(a.samples):
            task = {"id": f"r{i}", "kind": "noop"}
            t0 = clock()
            pool.apply(noop, (task,))
            samples.append((clock() - t0) / 1000.0)
    json.dump({"samples_us": samples}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
