#!/usr/bin/python3
"""Cold-start benchmark: time to a container's first output, and bytes moved over the link.

Runs, in ONE run on this machine, alternating trials with fresh daemons and dropped caches:
containerd's own overlayfs full pull (the baseline), stargz-snapshotter (its library from
Debian with our own main, bench/coldstart/stargzd, built here; the eStargz image pulled with
`ctr-remote images rpull`) and lazypull lazy pulls (eStargz made by ctr-remote, zstd:chunked made
by skopeo, optionally lazypull-converted `--optimize` images, and the untouched gzip image with
its SOCI index made by `lazypull index create` (variant soci), pulled with `ctr-remote images
rpull` and `lazypull rpull`), for images built from Debian packages by this script. The registry (Debian docker-registry) runs in a network namespace
behind a veth shaped with tbf (100 Mbit/s) and a delay proxy (10 ms each way: 20 ms RTT);
an unshaped path is measured too. Results: JSON lines per trial, a summary (medians, ratios
against the full pull and against stargz-snapshotter), and a PNG bar chart.

Usage (root, from the repo, after scripts/build.sh):
  bench/coldstart/coldstart.py [--build build] [--work /var/tmp/lazypull-coldstart]
                               [--apps python,node,gcc] [--trials 3] [--links shaped,unshaped]
                               [--variants ...] [--out bench/coldstart/results]
                               [--index-timing] [--netns lpcs --subnet 10.231.0]
Images are built once and kept in --work (rebuild with --rebuild). --index-timing also times
`lazypull index create` against `ctr-remote images convert --estargz` and `lazypull convert
--format estargz` of each app's gzip image (untimed by the trials; index-timing.json).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from benchlib import (APPS, Network, SetupContainerd, build_layout,  # noqa: E402
                      build_rootfs, cleanup_dir, drop_caches, log, push_images, run,
                      start_containerd, stop_proc)

# --- trials --------------------------------------------------------------------------------

STARGZD = "bin/lazypull-bench-stargzd"


def build_stargzd(build):
    """Builds stargz-snapshotter's daemon (our main over Debian's library, offline)."""
    here = os.path.dirname(os.path.abspath(__file__))
    run(["bash", f"{here}/stargzd/build.sh", build, f"{build}/{STARGZD}"])


class Trial:
    """One fresh containerd in a temp dir, plus one fresh snapshotter daemon with a fresh root:
    lazypull (lazypull_config not None, the lines added to its config) or stargz-snapshotter
    (stargz True), or none for the full pull. Both daemons get the same registry config: plain
    HTTP to `host`, nothing else."""

    def __init__(self, args, host, lazypull_config, stargz=False):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="cs-", dir="/tmp")
        self.sock = f"{self.dir}/c.sock"
        self.lp_sock = f"{self.dir}/lp.sock"
        self.lp = None
        cfg = (f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
               f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
               f'[grpc]\n  address = "{self.sock}"\n'
               f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.dir}/opt"\n')
        if lazypull_config is not None:
            cfg += f'[proxy_plugins.lazypull]\n  type = "snapshot"\n  address = "{self.lp_sock}"\n'
            with open(f"{self.dir}/lazypull.toml", "w") as f:
                f.write((f'log_level = "debug"\n' if args.keep else "") +
                        f'[registry]\nplain_http = ["{host}"]\n' + lazypull_config)
            self.lp_log = open(f"{self.dir}/lazypull.log", "w")
            self.lp = subprocess.Popen(
                [f"{args.build}/bin/lazypull-snapshotter", "--config", f"{self.dir}/lazypull.toml",
                 "--root", f"{self.dir}/lp", "--address", self.lp_sock, "--metrics-address", ""],
                stdout=self.lp_log, stderr=self.lp_log)
        elif stargz:
            cfg += f'[proxy_plugins.stargz]\n  type = "snapshot"\n  address = "{self.lp_sock}"\n'
            # containerd-stargz-grpc's format; only the registry is configured (its way of
            # saying plain HTTP: the host as its own insecure mirror), the rest is default.
            with open(f"{self.dir}/stargz.toml", "w") as f:
                f.write(f'[[resolver.host."{host}".mirrors]]\n  host = "{host}"\n'
                        f'  insecure = true\n')
            self.lp_log = open(f"{self.dir}/stargz.log", "w")
            self.lp = subprocess.Popen(
                [f"{args.build}/{STARGZD}", "--config", f"{self.dir}/stargz.toml",
                 "--root", f"{self.dir}/sg", "--address", self.lp_sock,
                 "--log-level", "debug" if args.keep else "info"],
                stdout=self.lp_log, stderr=self.lp_log)
        if self.lp:
            for _ in range(200):
                if os.path.exists(self.lp_sock) or self.lp.poll() is not None:
                    break
                time.sleep(0.05)
            if self.lp.poll() is not None:
                log(open(self.lp_log.name).read())
                cleanup_dir(self.dir)
                raise RuntimeError(f"snapshotter daemon exited ({self.lp.returncode})")
        self.containerd, self.c_log = start_containerd(self.dir, cfg, self.sock)

    def ctr(self, *a):
        return ["ctr", "--address", self.sock, "-n", "bench"] + list(a)

    def status(self):
        try:
            return json.load(open(f"{self.dir}/lp/status.json"))
        except (OSError, ValueError):
            return {}

    def stop(self):
        stop_proc(self.containerd)
        if self.lp:
            stop_proc(self.lp)
        cleanup_dir(self.dir)


def sample_link(net, samples, stop):
    while not stop.is_set():
        samples.append((time.time(), net.rx_bytes()))
        time.sleep(0.01)


def time_run(trial, pull_cmd, run_cmd, net):
    """Runs the pull then the container; returns (seconds to first output, link bytes before
    first output, output line, pull seconds)."""
    drop_caches()
    # --keep: the link's bytes every 10 ms and the run's moments, in wall-clock time to line
    # up with the daemons' logs (link.jsonl in the kept trial's dir).
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_link, args=(net, samples, stop), daemon=True)
    if trial.args.keep:
        sampler.start()
    rx0 = net.rx_bytes()
    t0, w0 = time.monotonic(), time.time()
    r = subprocess.run(pull_cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pull failed: {' '.join(pull_cmd)}\n{r.stdout}{r.stderr}")
    t_pull = time.monotonic() - t0
    rx_pull = net.rx_bytes() - rx0
    p = subprocess.Popen(run_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    t1 = time.monotonic()
    rx1 = net.rx_bytes()
    if trial.args.keep:
        stop.set()
        sampler.join()
        with open(f"{trial.dir}/link.jsonl", "w") as f:
            f.write(json.dumps({"pull_start": w0, "pull_end": w0 + t_pull,
                                "first_output": w0 + (t1 - t0)}) + "\n")
            for t, b in samples:
                f.write(json.dumps({"t": t, "rx": b}) + "\n")
    rest, err = p.communicate(timeout=300)
    if p.returncode != 0 or not line:
        raise RuntimeError(f"run failed ({p.returncode}): {' '.join(run_cmd)}\n{line}{rest}{err}")
    return t1 - t0, rx1 - rx0, line.strip(), t_pull, rx_pull


def warm_reads(trial, snapshotter, ref, cid):
    """Inside a container, page cache dropped before each: sequential read of the 32 MiB file
    and a find/stat walk of the tree."""
    out = {}
    for what, warmup, script in (
            ("seq_read_32m", "cat /dev/null; date > /dev/null",
             "cat /opt/bench/blob32m > /dev/null"),
            ("find_walk", "find /dev/null > /dev/null; date > /dev/null",
             "find / -xdev -printf '%s %m\\n' > /dev/null")):
        best = None
        for _ in range(3):
            drop_caches()
            cmd = trial.ctr("run", "--rm", "--snapshotter", snapshotter, ref, f"{cid}-{what}",
                            "/bin/sh", "-c",
                            # The tools run once first (on other files) so that loading
                            # their binaries and libraries is not timed: only the read or walk.
                            f"{warmup}; s=$(date +%s%N); {script}; e=$(date +%s%N); "
                            "echo $(( (e-s)/1000 ))")
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"warm read failed: {r.stdout}{r.stderr}")
            us = int(r.stdout.strip().splitlines()[-1])
            best = us if best is None else min(best, us)
        out[what] = best / 1e6
    return out


def variants_for(args, refs):
    """variant -> (image, lazypull config lines or None, client). Client "stargz" is
    stargz-snapshotter with `ctr-remote images rpull --snapshotter stargz`."""
    v = {"full": ("gzip", None, "ctr")}
    v["stargz"] = ("estargz", None, "stargz")
    v["estargz"] = ("estargz", "", "ctr-remote")
    v["zstdchunked"] = ("zstdchunked", "", "ctr-remote")
    # The untouched gzip image with its SOCI index (v2), found by the default configuration
    # from the manifest containerd's labels name.
    v["soci"] = ("soci", "", "ctr-remote")
    # The same with 1 MiB spans (`index create --span-size 1MiB`, not its default).
    v["soci-1m"] = ("soci-1m", "", "ctr-remote")
    # The same with soci's own checkpoints exactly (`--large-file-spans 0`: small files share
    # spans with the large files next to them).
    v["soci-exact"] = ("soci-exact", "", "ctr-remote")
    v["estargz-nobg"] = ("estargz", "[mount]\nbackground_fetch = false\n", "ctr-remote")
    v["estargz-fuse"] = ("estargz", "[mount]\nbackend = \"fuse\"\n", "ctr-remote")
    # Before issue 18's ELF-aware prefetch and directory batches (for the trace in README).
    v["estargz-noelf"] = ("estargz", "[mount]\nelf_prefetch = false\ndirectory_batch = 0\n",
                          "ctr-remote")
    if args.rpull:
        v["estargz-rpull"] = ("estargz", "", "lazypull-rpull")
        v["zstdchunked-rpull"] = ("zstdchunked", "", "lazypull-rpull")
    if "estargz-opt" in refs:
        v["estargz-opt"] = ("estargz-opt", "", "ctr-remote")
        v["zstdchunked-opt"] = ("zstdchunked-opt", "", "ctr-remote")
    wanted = args.variants.split(",") if args.variants else list(v)
    return {k: v[k] for k in wanted if k in v}


def one_trial(args, net, link, app, variant, spec, refs, n, warm):
    image_key, lp_config, client = spec
    host = net.host(link)
    ref = f"{host}/{refs[image_key]}"
    snap = {"ctr": "overlayfs", "stargz": "stargz"}.get(client, "lazypull")
    trial = Trial(args, host, lp_config if snap == "lazypull" else None, stargz=snap == "stargz")
    try:
        if client == "ctr":
            pull = trial.ctr("images", "pull", "--plain-http", ref)
        elif client in ("ctr-remote", "stargz"):
            pull = ["ctr-remote", "--address", trial.sock, "-n", "bench", "images", "rpull",
                    "--plain-http", "--snapshotter", snap, ref]
        else:
            pull = [f"{args.build}/bin/lazypull", "rpull", "--address", trial.sock, "-n", "bench",
                    "--plain-http", "--snapshotter", "lazypull", ref]
        cid = f"cs{n}"
        runc = trial.ctr("run", "--rm", "--snapshotter", snap, ref, cid) + APPS[app][1]
        # The machine may be shared: the load at the start of the timed part goes with it.
        load = os.getloadavg()[0]
        secs, moved, line, t_pull, moved_pull = time_run(trial, pull, runc, net)
        if snap == "lazypull":
            time.sleep(2.2)  # one status interval: status.json then covers the run
        st = trial.status()
        json.dump(st, open(f"{trial.dir}/status-after-run.json", "w"), indent=1)
        layers = st.get("layers", [])
        rec = {"link": link, "app": app, "variant": variant, "trial": n, "seconds": secs,
               "pull_seconds": t_pull, "bytes_moved": moved, "pull_bytes_moved": moved_pull,
               "output": line, "loadavg_1m": load,
               "lazy_layers": len(layers),
               "bytes_read": sum(l.get("bytes_read", 0) for l in layers),
               "bytes_fetched": sum(l.get("bytes_fetched", 0) for l in layers),
               "background_bytes": sum(l.get("background_bytes", 0) for l in layers),
               "requests": sum(l.get("requests", 0) for l in layers),
               # Fetches the container's own reads started (misses nothing foresaw): in a
               # single-threaded start each waited for the one before, so this is the start's
               # serial depth (issue 18: <= 6 for python).
               "serial_depth": sum(l.get("demand_fetches", 0) for l in layers),
               # Lazy layers by format ("soci", "estargz", ...): a soci row whose layers fell
               # back to a normal pull would otherwise pass for a slow lazy one.
               "formats": sorted(l.get("format", "?") for l in layers),
               "elf_walks": st.get("elf_prefetch", {}).get("walks_finished", 0),
               "elf_objects": st.get("elf_prefetch", {}).get("objects", 0)}
        # Warm reads compare fully local layers; without background fetch they never become
        # local, so that variant has no warm numbers; stargz-snapshotter reports no "fully
        # local" to wait for, so it has none either.
        if warm and snap != "stargz" and "background_fetch = false" not in (lp_config or ""):
            # Warm reads are of a fully local image: wait until every layer is local and, on
            # EROFS, graduated (served from its local copy with no FUSE in the data path; the
            # mount switches to it shortly after the layer becomes local).
            deadline = time.time() + 600
            while snap == "lazypull" and time.time() < deadline:
                ls = trial.status().get("layers", [])
                if ls and all(l.get("fetched_percent", 0) >= 100 and
                              (l.get("backend") != "erofs" or l.get("graduated"))
                              for l in ls):
                    break
                time.sleep(0.5)
            else:
                if snap == "lazypull":
                    raise RuntimeError("layers did not become local within 600 s")
            rec.update(warm_reads(trial, snap, ref, cid))
        return rec
    finally:
        if args.keep:
            log(f"kept {trial.dir}")
            stop_proc(trial.containerd)
            if trial.lp:
                stop_proc(trial.lp)
        else:
            trial.stop()


def timed(cmd):
    """Runs `cmd` with dropped caches; returns (seconds, combined output)."""
    drop_caches()
    t0 = time.monotonic()
    r = run(cmd, capture=True)
    return time.monotonic() - t0, r.stdout + r.stderr


def index_timing(args, net, app, refs):
    """`lazypull index create` (registry to registry, as users run it) against the two eStargz
    converters on the same gzip image, over the unshaped path: `lazypull convert --format
    estargz` (registry to registry) and `ctr-remote images convert --estargz` (containerd's
    content store to itself: its pull before and any push after are not timed). Also the zTOC
    of every layer (`index create`'s report)."""
    net.shape("unshaped")
    host = net.host("unshaped")
    src = f"{host}/{refs['gzip']}"
    lp = f"{args.build}/bin/lazypull"
    out = {"app": app, "loadavg_1m": os.getloadavg()[0]}
    out["index_create_s"], report = timed(
        [lp, "index", "create", "--plain-http", src, f"{host}/bench/{app}:soci-timing"])
    out["layers"] = [line for line in report.splitlines() if line.startswith("layer ")]
    out["lazypull_convert_estargz_s"], _ = timed(
        [lp, "convert", "--format", "estargz", "--plain-http", src,
         f"{host}/bench/{app}:esgz-timing"])
    c = SetupContainerd(args.work)
    try:
        run(["ctr", "--address", c.sock, "-n", "setup", "images", "pull", "--plain-http", src])
        out["ctr_remote_convert_estargz_s"], _ = timed(
            ["ctr-remote", "--address", c.sock, "-n", "setup", "images", "convert", "--estargz",
             "--oci", src, f"{host}/bench/{app}:esgz-timing2"])
    finally:
        c.stop()
    log(json.dumps(out))
    return out


def summarize(results, out_dir):
    rows = []
    groups = {}
    for r in results:
        groups.setdefault((r["link"], r["app"], r["variant"]), []).append(r)
    for (link, app, variant), rs in sorted(groups.items()):
        med = statistics.median(x["seconds"] for x in rs)
        full = groups.get((link, app, "full"))
        full_med = statistics.median(x["seconds"] for x in full) if full else None
        sg = groups.get((link, app, "stargz"))
        sg_med = statistics.median(x["seconds"] for x in sg) if sg else None
        es = groups.get((link, app, "estargz"))
        es_med = statistics.median(x["seconds"] for x in es) if es else None
        row = {"link": link, "app": app, "variant": variant, "trials": len(rs),
               "median_seconds": med,
               "median_bytes_moved": statistics.median(x["bytes_moved"] for x in rs),
               "median_bytes_read": statistics.median(x["bytes_read"] for x in rs),
               "speedup_vs_full": (full_med / med) if full_med else None,
               # This variant's time ÷ stargz-snapshotter's, same run (issue 18: lazypull's
               # eStargz rows ≤ 1/1.5).
               "time_vs_stargz": (med / sg_med) if sg_med and variant != "stargz" else None,
               # This variant's time ÷ lazypull eStargz's, same run (issue 19: soci ≤ 1.3).
               "time_vs_estargz": (med / es_med) if es_med and variant != "estargz" else None,
               "median_loadavg_1m": statistics.median(x.get("loadavg_1m", 0) for x in rs),
               "median_serial_depth": statistics.median(x.get("serial_depth", 0) for x in rs)}
        for k in ("seq_read_32m", "find_walk"):
            if all(k in x for x in rs):
                row[k] = statistics.median(x[k] for x in rs)
                if full and all(k in x for x in full):
                    row[k + "_ratio_vs_full"] = row[k] / statistics.median(x[k] for x in full)
        rows.append(row)
    with open(f"{out_dir}/summary.json", "w") as f:
        json.dump(rows, f, indent=1)
    print(f"{'link':9} {'app':7} {'variant':18} {'n':>2} {'seconds':>8} {'x full':>7} "
          f"{'/stargz':>7} {'/esgz':>6} {'MiB moved':>9} {'MiB read':>8} {'serial':>6} "
          f"{'load':>5}")
    for r in rows:
        sp = f"{r['speedup_vs_full']:.1f}" if r["speedup_vs_full"] else "-"
        vs = f"{r['time_vs_stargz']:.2f}" if r["time_vs_stargz"] else "-"
        ve = f"{r['time_vs_estargz']:.2f}" if r["time_vs_estargz"] else "-"
        # Only lazypull reports what the container read (its status.json).
        rd = f"{r['median_bytes_read'] / 2**20:8.1f}" if r["variant"] not in ("full", "stargz") \
            else f"{'-':>8}"
        lazy = r["variant"] not in ("full", "stargz")
        sd = f"{r['median_serial_depth']:6.0f}" if lazy else f"{'-':>6}"
        print(f"{r['link']:9} {r['app']:7} {r['variant']:18} {r['trials']:>2} "
              f"{r['median_seconds']:8.2f} {sp:>7} {vs:>7} {ve:>6} "
              f"{r['median_bytes_moved'] / 2**20:9.1f} "
              f"{rd} {sd} {r['median_loadavg_1m']:5.1f}")
    return rows


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    links = sorted({r["link"] for r in rows})
    # One order and one colour per variant in every panel.
    order = ["full", "stargz", "estargz", "zstdchunked", "soci", "soci-1m", "soci-exact",
             "estargz-rpull",
             "zstdchunked-rpull",
             "estargz-nobg", "estargz-fuse", "estargz-noelf", "estargz-opt", "zstdchunked-opt"]
    all_variants = sorted({r["variant"] for r in rows},
                          key=lambda v: (order.index(v) if v in order else len(order), v))
    colours = {v: f"C{i % 10}" for i, v in enumerate(all_variants)}
    fig, axes = plt.subplots(1, len(links), figsize=(7 * len(links), 5), squeeze=False)
    for ax, link in zip(axes[0], links):
        rs = [r for r in rows if r["link"] == link]
        apps = sorted({r["app"] for r in rs})
        variants = [v for v in all_variants if any(r["variant"] == v for r in rs)]
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            ys = [next((r["median_seconds"] for r in rs if r["app"] == a and r["variant"] == v), 0)
                  for a in apps]
            xs = [j + i * width for j in range(len(apps))]
            ax.bar(xs, ys, width, label=v, color=colours[v])
        ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(apps))])
        ax.set_xticklabels(apps)
        ax.set_ylabel("seconds to first output (median)")
        ax.set_title(f"cold start, {link} link")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default="/var/tmp/lazypull-coldstart")
    ap.add_argument("--apps", default="python,node,gcc")
    ap.add_argument("--links", default="shaped,unshaped")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--variants", default="")
    ap.add_argument("--optimize", action="store_true", help="also --optimize converted images")
    ap.add_argument("--rpull", action="store_true", help="also pull with `lazypull rpull`")
    ap.add_argument("--warm", action="store_true", help="also warm read/walk inside containers")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep each trial's dir and logs")
    ap.add_argument("--index-timing", action="store_true",
                    help="also time index create against convert (index-timing.json)")
    ap.add_argument("--netns", default="lpcs", help="the registry's namespace and veth name")
    ap.add_argument("--subnet", default="10.231.0", help="first 3 octets of the veth's /24")
    ap.add_argument("--out", default="bench/coldstart/results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("coldstart: must run as root (namespaces, mounts, drop_caches)")
    args.build = os.path.abspath(args.build)
    if not args.variants or "stargz" in args.variants.split(","):
        build_stargzd(args.build)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    net = Network(args.work, args.build, name=args.netns, subnet=args.subnet)
    results = []
    try:
        net.start()
        refs = {}
        for app in args.apps.split(","):
            base, root, size = build_rootfs(args.work, app, args.rebuild)
            layout = build_layout(args.work, app, base, root, args.rebuild)
            net.shape("unshaped")
            refs[app] = push_images(args.work, net, app, layout, args.rebuild, args.optimize,
                                    f"{args.build}/bin/lazypull")
        if args.index_timing:
            timings = [index_timing(args, net, app, refs[app]) for app in args.apps.split(",")]
            with open(f"{args.out}/index-timing.json", "w") as f:
                json.dump(timings, f, indent=1)
        with open(f"{args.out}/trials.jsonl", "w") as out:
            for link in args.links.split(","):
                net.shape(link)
                for n in range(args.trials):
                    for app in args.apps.split(","):
                        for variant, spec in variants_for(args, refs[app]).items():
                            rec = one_trial(args, net, link, app, variant, spec, refs[app], n,
                                            args.warm and link == "unshaped" and n == 0)
                            log(json.dumps(rec))
                            out.write(json.dumps(rec) + "\n")
                            out.flush()
                            results.append(rec)
    finally:
        net.stop()
    rows = summarize(results, args.out)
    chart(rows, f"{args.out}/coldstart.png")


if __name__ == "__main__":
    main()
