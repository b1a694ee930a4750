#!/usr/bin/env python3
"""Python peer for the scan section, the seed's way: `multiprocessing.Pool(P)` over
line-aligned byte ranges of a file, `re` per line, the first group's values counted.

    scan.py --procs P --chunk BYTES --pattern RE FILE

A line belongs to the range holding its first byte, as in bulkhead's scan tasks. Prints
{"matched_lines": N, "counts": {VALUE: N}} on stdout.
"""
import argparse
import collections
import json
import multiprocessing as mp
import os
import re


def scan(job):
    path, offset, length, pattern = job
    rx = re.compile(pattern.encode())
    counts = collections.Counter()
    matched = 0
    end = offset + length
    with open(path, "rb") as f:
        if offset > 0:
            f.seek(offset - 1)
            f.readline()
        pos = f.tell()
        while pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            m = rx.search(line.rstrip(b"\n"))
            if m:
                matched += 1
                if m.groups() and m.group(1) is not None:
                    counts[m.group(1).decode("utf-8", "replace")] += 1
    return matched, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=16 << 20)
    ap.add_argument("--pattern", required=True)
    ap.add_argument("file")
    a = ap.parse_args()
    size = os.path.getsize(a.file)
    jobs = [(a.file, off, a.chunk, a.pattern) for off in range(0, size, a.chunk)]
    total = collections.Counter()
    matched = 0
    with mp.Pool(a.procs) as pool:
        for n, c in pool.imap_unordered(scan, jobs):
            matched += n
            total.update(c)
    print(json.dumps({"matched_lines": matched, "counts": dict(total)}))


if __name__ == "__main__":
    main()
