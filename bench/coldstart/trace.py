#!/usr/bin/python3
"""Prints the trace of one cold start from a lazypull debug log (a trial kept with
`coldstart.py --keep`: /tmp/cs-*/lazypull.log): every miss a program's read started (its own
fetch: the serial depth), every ELF walk, and the fetches with their bytes and duration.

Usage: bench/coldstart/trace.py /tmp/cs-XXXX/lazypull.log
"""
import datetime
import json
import os
import sys


def ts(line):
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def link_timeline(path):
    """Prints the run's moments and MB/s per 100 ms from link.jsonl; returns the pull's start
    (wall clock) or None."""
    if not os.path.exists(path):
        return None
    rows = [json.loads(l) for l in open(path)]
    meta, samples = rows[0], rows[1:]
    t0 = meta["pull_start"]
    print(f"pull end {meta['pull_end'] - t0:.3f} s, first output {meta['first_output'] - t0:.3f} s")
    cells, j = [], 0
    for k in range(int((meta["first_output"] - t0) * 10) + 2):
        while j + 1 < len(samples) and samples[j + 1]["t"] <= t0 + k * 0.1:
            j += 1
        cells.append(samples[j]["rx"])
    rates = [f"{(k - 1) / 10:.1f}:{(cells[k] - cells[k - 1]) / 1e5:5.1f}" for k in range(1, len(cells))]
    print("link MB/s per 100 ms (from the pull's start):")
    for i in range(0, len(rates), 10):
        print("  " + " ".join(rates[i:i + 10]))
    return t0


def main():
    lines = []
    for raw in open(sys.argv[1]):
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    events = [l for l in lines if l.get("msg") in ("layer miss", "layer fetch", "ELF prefetch")]
    if not events:
        print("no debug events (run the trial with --keep)")
        return
    t0 = link_timeline(os.path.join(os.path.dirname(sys.argv[1]), "link.jsonl")) or ts(events[0])
    misses = 0
    by_kind = {}
    for e in events:
        t = (ts(e) - t0) * 1000
        layer = e.get("layer", "")[7:19]
        if e["msg"] == "layer miss":
            misses += 1
            print(f"{t:8.1f} ms  miss #{misses:<3} {layer} {e.get('file')} "
                  f"@{e.get('offset')} +{e.get('length')}")
        elif e["msg"] == "ELF prefetch":
            print(f"{t:8.1f} ms  ELF walk    {layer} {e.get('file')}: {e.get('objects')} objects, "
                  f"{e.get('rounds')} rounds, {e.get('chunks_ahead')} chunks ahead, "
                  f"{e.get('ms', 0):.0f} ms")
        else:
            kind = e.get("kind")
            n, b = by_kind.get(kind, (0, 0))
            by_kind[kind] = (n + 1, b + e.get("bytes", 0))
            print(f"{t:8.1f} ms  fetch {kind:<10} {layer} {e.get('ranges')} range(s) "
                  f"{e.get('bytes', 0) / 1024:8.0f} KiB {e.get('ms', 0):6.0f} ms "
                  f"(from {t - e.get('ms', 0):.1f} ms)")
    print(f"misses a read started (serial depth): {misses}")
    for kind, (n, b) in sorted(by_kind.items()):
        print(f"  {kind:<10} {n:4} fetches {b / 2**20:8.2f} MiB")


if __name__ == "__main__":
    main()
