#!/usr/bin/env python3
"""Python peer for the throughput section: the same JSONL batch of no-op tasks, read line by
line, run on 2 worker processes, one JSON result written per task.

    throughput.py MODE TASKS.jsonl RESULTS.jsonl [--limit N] [--workers 2]

MODE: pool-chunk1000 | pool-chunk1 | ppe-submit | ppe-map1000. Prints one JSON object
({"mode", "tasks", "secs"}) on stdout; the caller times the whole process from outside.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from itertools import islice


def run_task(task):
    """The worker side: a no-op, timed like bulkhead times a task."""
    t0 = time.perf_counter()
    if task.get("kind") != "noop":
        raise ValueError("only noop tasks here")
    return task["id"], (time.perf_counter() - t0) * 1000.0


def read_tasks(path, limit):
    with open(path, encoding="utf-8") as f:
        lines = islice(f, limit) if limit else f
        for line in lines:
            yield json.loads(line)


def write(out, result):
    tid, ms = result
    out.write(json.dumps({"id": tid, "status": "ok", "attempts": 1, "ms": round(ms, 3), "output": None}))
    out.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pool-chunk1000", "pool-chunk1", "ppe-submit", "ppe-map1000"])
    ap.add_argument("tasks")
    ap.add_argument("results")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    n = 0
    t0 = time.perf_counter()
    with open(a.results, "w", encoding="utf-8") as out:
        tasks = read_tasks(a.tasks, a.limit)
        if a.mode.startswith("pool-"):
            chunk = 1000 if a.mode == "pool-chunk1000" else 1
            with mp.get_context("fork").Pool(a.workers) as pool:
                for r in pool.imap_unordered(run_task, tasks, chunksize=chunk):
                    write(out, r)
                    n += 1
        elif a.mode == "ppe-submit":
            with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("fork")) as ex:
                futures = [ex.submit(run_task, t) for t in tasks]
                for f in as_completed(futures):
                    write(out, f.result())
                    n += 1
        else:
            with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("fork")) as ex:
                for r in ex.map(run_task, tasks, chunksize=1000):
                    write(out, r)
                    n += 1
    json.dump({"mode": a.mode, "tasks": n, "secs": time.perf_counter() - t0}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
