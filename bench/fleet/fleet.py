#!/usr/bin/python3
"""Fleet benchmark (issue 21): N nodes cold-start the same eStargz image at the same moment,
reading one upstream registry directly or through a pull-through cache.

Each node is its own containerd + lazypull-snapshotter with the DEFAULT configuration (only
its root, sockets, metrics port and `[registry] config_path` are its own). The upstream
registry (Debian docker-registry) runs in a network namespace behind a veth shaped with tbf
(100 Mbit/s) and a delay proxy (10 ms each way: 20 ms RTT), as in bench/coldstart; the cache
(Debian docker-registry in proxy mode, `proxy.remoteurl` = the shaped upstream) runs on
loopback and is named as a mirror in each node's hosts.toml. Rows:

  direct  nodes read the upstream (hosts.toml names no mirror)
  cold    through a fresh cache (empty storage)
  warm    through the same cache once it has stored the image
  full    containerd's overlayfs full pull (`ctr images pull --hosts-dir`) through a fresh cache

Per row: each node's seconds to first output (pull + `ctr run`, from one common start),
upstream bytes (what crossed the shaped veth) until every node's first output, until every
node's background fetch has finished (status.json: every layer's background state final), and
once the link is quiet (the cache's own background copies included); bytes the cache served
(its access log); each node's fetch and mirror-fallback counters (/metrics). Results:
results.json, a PNG chart, a table on stdout.

Usage (root, from the repo, after `ninja -C build lazypull-snapshotter lazypull
coldstart_delay_proxy`):
  bench/fleet/fleet.py [--build build] [--nodes 4] [--rows direct,cold,warm,full]
                       [--images /var/tmp/lazypull-coldstart] [--work /var/tmp/lazypull-fleet]
                       [--out bench/fleet/results] [--log-level info] [--keep]
The image is coldstart's python image (built and pushed into --images if not there yet).
Every process, mount, namespace and veth it creates is removed at exit, also on failure or
Ctrl-C.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from benchlib import (APPS, TBF_LATENCY, Network, build_layout, build_rootfs,  # noqa: E402
                      drop_caches, log, push_images, run, stop_proc)
from fleet_node import (CACHE_PORT, Cache, Node, registry_log_summary,  # noqa: E402
                        request_timeline, write_hosts)

ROWS = ("direct", "cold", "warm", "full")


def image_size(net, repo_ref):
    """Compressed bytes of the image (config + layers) as the registry stores it."""
    host = net.host("unshaped")
    repo, tag = repo_ref.rsplit(":", 1)
    accept = ("application/vnd.oci.image.manifest.v1+json,"
              "application/vnd.docker.distribution.manifest.v2+json")
    r = run(["curl", "-sf", "-H", f"Accept: {accept}", f"http://{host}/v2/{repo}/manifests/{tag}"],
            capture=True)
    m = json.loads(r.stdout)
    layers = [l["size"] for l in m["layers"]]
    return m["config"]["size"] + sum(layers), [l["digest"] for l in m["layers"]], layers


def wait_quiet(net, quiet_s=3.0, timeout=600):
    """Waits until nothing crosses the shaped link for `quiet_s` (the cache's own background
    copies from the upstream included)."""
    deadline = time.time() + timeout
    last, since = net.rx_bytes(), time.time()
    while time.time() < deadline:
        time.sleep(0.5)
        now = net.rx_bytes()
        if now - last > 4096:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return
    log("link did not go quiet within the timeout")


def run_row(args, net, row, ref, certs, cache, n_nodes):
    """Starts n_nodes fresh nodes, releases them together, and measures the row."""
    lazy = row != "full"
    nodes = []
    rec = {"row": row, "nodes": n_nodes}
    try:
        for i in range(n_nodes):
            nodes.append(Node(args, row, i, certs, lazy))
        drop_caches()
        cache_mark = cache.log_offset() if cache else 0
        upstream_log = f"{args.work}/registry.log"
        upstream_mark = os.path.getsize(upstream_log)
        rec["loadavg_1m"] = os.getloadavg()[0]
        results = [None] * n_nodes
        barrier = threading.Barrier(n_nodes + 1)
        t0_box = {}

        def go(i):
            barrier.wait()
            try:
                results[i] = nodes[i].start_image(ref, APPS[args.app][1], t0_box["t0"])
            except Exception as e:  # reported below, after every thread is done
                results[i] = e

        threads = [threading.Thread(target=go, args=(i,)) for i in range(n_nodes)]
        for t in threads:
            t.start()
        rx0 = net.rx_bytes()
        t0_box["t0"] = time.monotonic()
        t0_wall = time.time()
        # The link's timeline: bytes crossed since t0, sampled every 0.2 s until the row ends.
        samples, sampling = [], threading.Event()

        def sample():
            while not sampling.wait(0.2):
                samples.append([round(time.monotonic() - t0_box["t0"], 2), net.rx_bytes() - rx0])
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        barrier.wait()
        for t in threads:
            t.join()
        rx_first = net.rx_bytes()
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                raise RuntimeError(f"row {row} node {i}: {r}")
        rec["seconds"] = [r["seconds"] for r in results]
        rec["pull_seconds"] = [r["pull_seconds"] for r in results]
        rec["output"] = sorted({r["output"] for r in results})
        rec["upstream_bytes_first_output"] = rx_first - rx0
        # Background fetches: every node's layers in a final state.
        t_bg = time.monotonic()
        if lazy:
            for node in nodes:
                node.wait_background(timeout=args.bg_timeout)
        rec["background_seconds"] = time.monotonic() - t0_box["t0"]
        rec["upstream_bytes_background_done"] = net.rx_bytes() - rx0
        log(f"row {row}: background done {time.monotonic() - t_bg:.1f} s after first outputs")
        wait_quiet(net)
        rec["upstream_bytes_settled"] = net.rx_bytes() - rx0
        sampling.set()
        sampler.join()
        rec["timeline"] = {
            "link_bytes": samples,
            # [start, end] s from t0, client, method, status, bytes written.
            "upstream_blob_requests": request_timeline(upstream_log, upstream_mark, t0_wall),
            "cache_blob_requests": (request_timeline(cache.log_path, cache_mark, t0_wall)
                                    if cache else []),
        }
        for i, r in enumerate(results):
            at = max((b for t, b in samples if t <= r["seconds"]), default=0)
            log(f"row {row} node {i}: pull {r['pull_seconds']:.2f} s, first output "
                f"{r['seconds']:.2f} s, link bytes by then {at / 2**20:.1f} MiB")
        rec["node_stats"] = [node.stats() for node in nodes]
        if cache:
            rec["cache"] = cache.served_since(cache_mark)
        # What the upstream answered, by client ("Go-http-client" is the cache). Its bytes
        # written include streams the cache abandoned: the link counters are the measure.
        rec["upstream_log"] = registry_log_summary(upstream_log, upstream_mark, by_agent=True)
    finally:
        for node in nodes:
            node.stop()
    return rec


def summarize(rows, size):
    direct = next((r for r in rows if r["row"] == "direct"), None)
    for r in rows:
        r["median_seconds"] = statistics.median(r["seconds"])
        r["max_seconds"] = max(r["seconds"])
        r["upstream_vs_image"] = r["upstream_bytes_background_done"] / size
        r["upstream_settled_vs_image"] = r["upstream_bytes_settled"] / size
        if direct:
            # Each node's time against the direct row's median and max, same run.
            r["max_vs_direct_median"] = r["max_seconds"] / direct["median_seconds"]
            r["max_vs_direct_max"] = r["max_seconds"] / direct["max_seconds"]
            r["median_vs_direct_median"] = r["median_seconds"] / direct["median_seconds"]
    print(f"{'row':7} {'nodes':>5} {'median s':>8} {'max s':>6} {'max/direct':>10} "
          f"{'up@first':>9} {'up@bg':>8} {'up settled':>10} {'x image':>7} {'cache out':>9} "
          f"{'load':>5}")
    for r in rows:
        vs = f"{r['max_vs_direct_max']:.2f}" if "max_vs_direct_max" in r else "-"
        served = r.get("cache", {}).get("bytes_served")
        served = f"{served / 2**20:9.1f}" if served is not None else f"{'-':>9}"
        print(f"{r['row']:7} {r['nodes']:>5} {r['median_seconds']:8.2f} {r['max_seconds']:6.2f} "
              f"{vs:>10} {r['upstream_bytes_first_output'] / 2**20:9.1f} "
              f"{r['upstream_bytes_background_done'] / 2**20:8.1f} "
              f"{r['upstream_bytes_settled'] / 2**20:10.1f} {r['upstream_vs_image']:7.2f} "
              f"{served} {r['loadavg_1m']:5.1f}")
    print("(MiB; up@bg = upstream bytes until every node's background fetch finished; "
          f"image = {size / 2**20:.1f} MiB compressed)")


def chart(rows, size, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["row"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, r in enumerate(rows):
        a1.bar(i, r["median_seconds"], 0.6, color=f"C{i}")
        a1.scatter([i] * len(r["seconds"]), r["seconds"], color="black", s=12, zorder=3)
        a1.annotate(f"{r['median_seconds']:.1f}", (i, r["max_seconds"]), ha="center",
                    xytext=(0, 4), textcoords="offset points", fontsize=9)
    # The full pulls take ten times longer: a log axis keeps the lazy rows readable.
    a1.set_yscale("log")
    a1.set_ylim(bottom=1)
    a1.set_xticks(range(len(rows)))
    a1.set_xticklabels(names)
    a1.set_ylabel("seconds to first output (bar: median, dots: nodes)")
    a1.set_title(f"{rows[0]['nodes']} nodes start the same image")
    up = [r["upstream_bytes_background_done"] / 2**20 for r in rows]
    served = [r.get("cache", {}).get("bytes_served", 0) / 2**20 for r in rows]
    xs = range(len(rows))
    bars = a2.bar([x - 0.2 for x in xs], up, 0.4, label="upstream (until background done)")
    a2.bar_label(bars, fmt="%.0f", fontsize=8)
    a2.bar([x + 0.2 for x in xs], served, 0.4, label="served by the cache")
    a2.axhline(size / 2**20, color="grey", ls="--", label="image (compressed)")
    a2.axhline(1.5 * size / 2**20, color="red", ls=":", label="1.5x image")
    a2.set_xticks(list(xs))
    a2.set_xticklabels(names)
    a2.set_ylabel("MiB")
    a2.set_title("bytes")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def replot(path):
    """Redraws the chart of a results.json (--replot)."""
    data = json.load(open(path))
    chart(data["rows"], data["image_bytes"], os.path.join(os.path.dirname(path), "fleet.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--app", default="python")
    ap.add_argument("--images", default="/var/tmp/lazypull-coldstart",
                    help="coldstart's work dir: rootfs, OCI layout, upstream registry storage")
    ap.add_argument("--work", default="/var/tmp/lazypull-fleet", help="logs and cache storage")
    ap.add_argument("--out", default="bench/fleet/results")
    ap.add_argument("--log-level", default="info", help="lazypull's log_level (default: info)")
    ap.add_argument("--bg-timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep each node's dir (logs, status)")
    ap.add_argument("--replot", metavar="RESULTS_JSON", help="only redraw the chart of a run")
    args = ap.parse_args()
    if args.replot:
        replot(args.replot)
        return
    if os.geteuid() != 0:
        sys.exit("fleet: must run as root (namespaces, mounts, drop_caches)")
    rows_wanted = args.rows.split(",")
    for r in rows_wanted:
        if r not in ROWS:
            sys.exit(f"fleet: unknown row {r!r} (rows: {','.join(ROWS)})")
    if "warm" in rows_wanted and "cold" not in rows_wanted:
        sys.exit("fleet: the warm row reuses the cold row's cache: ask for both")
    args.build = os.path.abspath(args.build)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally blocks remove everything.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    net = Network(args.images, args.build, name="lpfl", subnet="10.232.0", logs=args.work,
                  registry_log="info")
    caches = []
    rows = []
    try:
        net.start()
        net.shape("unshaped")
        base, root, _ = build_rootfs(args.images, args.app, False)
        layout = build_layout(args.images, args.app, base, root, False)
        refs = push_images(args.images, net, args.app, layout, False, False,
                           f"{args.build}/bin/lazypull")
        size, digests, layer_sizes = image_size(net, refs["estargz"])
        log(f"image {refs['estargz']}: {size} bytes compressed, layers {layer_sizes}")
        net.shape("shaped")
        upstream = net.host("shaped")
        ref = f"{upstream}/{refs['estargz']}"
        cache = None
        for row in rows_wanted:
            certs = f"{args.work}/certs-{row}"
            shutil.rmtree(certs, ignore_errors=True)
            if row in ("cold", "full"):
                shutil.rmtree(f"{args.work}/cache-{row}", ignore_errors=True)
                cache = Cache(f"{args.work}/cache-{row}", upstream)
                caches.append(cache)
            elif row == "warm":
                cache.wait_stored(digests, timeout=args.bg_timeout)
            write_hosts(certs, upstream, None if row == "direct" else f"127.0.0.1:{CACHE_PORT}")
            wait_quiet(net)
            log(f"=== row {row}")
            rec = run_row(args, net, row, ref, certs, cache if row != "direct" else None,
                          args.nodes)
            log(json.dumps(rec))
            rows.append(rec)
            if row in ("warm", "full") or (row == "cold" and "warm" not in rows_wanted):
                cache.stop()
    finally:
        for c in caches:
            c.stop()
        net.stop()
    summarize(rows, size)
    with open(f"{args.out}/results.json", "w") as f:
        json.dump({"image": ref, "image_bytes": size, "layer_bytes": layer_sizes,
                   "nodes": args.nodes, "tbf_latency": TBF_LATENCY, "rows": rows},
                  f, indent=1)
    chart(rows, size, f"{args.out}/fleet.png")


if __name__ == "__main__":
    main()
