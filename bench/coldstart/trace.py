#!/usr/bin/python3
"""Prints the trace of one cold start from a lazypull debug log (a trial kept with
`coldstart.py --keep`: /tmp/cs-*/lazypull.log): every miss a program's read started (its own
fetch: the serial depth), every ELF walk, and the fetches with their bytes and duration.

Usage: bench/coldstart/trace.py /tmp/cs-XXXX/lazypull.log
"""
import datetime
import json
import sys


def ts(line):
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


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
    t0 = ts(events[0])
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
                  f"{e.get('bytes', 0) / 1024:8.0f} KiB {e.get('ms', 0):6.0f} ms")
    print(f"misses a read started (serial depth): {misses}")
    for kind, (n, b) in sorted(by_kind.items()):
        print(f"  {kind:<10} {n:4} fetches {b / 2**20:8.2f} MiB")


if __name__ == "__main__":
    main()
