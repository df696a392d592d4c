#!/usr/bin/python3
"""Cold-start benchmark: time to a container's first output, and bytes moved over the link.

Runs, in ONE run on this machine, alternating trials with fresh daemons and dropped caches:
containerd's own overlayfs full pull (the baseline), stargz-snapshotter (its library from
Debian with our own main, bench/coldstart/stargzd, built here; the eStargz image pulled with
`ctr-remote images rpull`) and lazypull lazy pulls (eStargz made by ctr-remote, zstd:chunked made
by skopeo, optionally lazypull-converted `--optimize` images, pulled with `ctr-remote images
rpull` and `lazypull rpull`), for images built from Debian packages by this script. The registry (Debian docker-registry) runs in a network namespace
behind a veth shaped with tbf (100 Mbit/s) and a delay proxy (10 ms each way: 20 ms RTT);
an unshaped path is measured too. Results: JSON lines per trial, a summary (medians, ratios
against the full pull and against stargz-snapshotter), and a PNG bar chart.

Usage (root, from the repo, after scripts/build.sh):
  bench/coldstart/coldstart.py [--build build] [--work /var/tmp/lazypull-coldstart]
                               [--apps python,node,gcc] [--trials 3] [--links shaped,unshaped]
                               [--variants ...] [--out bench/coldstart/results]
Images are built once and kept in --work (rebuild with --rebuild).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

NETNS = "lpcs"
HOST_IF, NS_IF = "lpcs0", "lpcs1"
HOST_IP, NS_IP = "10.231.0.1", "10.231.0.2"
REGISTRY_PORT = 5001  # inside the namespace, loopback only
LINKS = {
    # name: (proxy port, one-way delay ms, tbf rate or None)
    "shaped": (5000, 10, "100mbit"),
    "unshaped": (5002, 0, None),
}
APPS = {
    # name: (extra Debian packages, command reading a small part of the image)
    "python": ("python3 python3-pip python3-numpy python3-yaml python3-pandas",
               ["python3", "-c", "import json; print(1)"]),
    "node": ("nodejs npm", ["node", "-e", "console.log(1)"]),
    "gcc": ("gcc g++ make libc6-dev", ["gcc", "--version"]),
}
MIN_UNPACKED = 300 << 20


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, check=True, capture=False, env=None, timeout=None, cwd=None):
    log("+", " ".join(cmd) if isinstance(cmd, list) else cmd)
    r = subprocess.run(cmd, check=False, capture_output=capture, text=True, env=env,
                       timeout=timeout, cwd=cwd, shell=isinstance(cmd, str))
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {cmd}\n{r.stdout or ''}{r.stderr or ''}")
    return r


def ns(cmd):
    return ["ip", "netns", "exec", NETNS] + cmd


def debian_mirror():
    for path in ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]:
        if not os.path.exists(path):
            continue
        for line in open(path):
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def dir_size(path):
    r = run(["du", "-sb", "--exclude=proc", path], capture=True)
    return int(r.stdout.split()[0])


# --- network -------------------------------------------------------------------------------

class Network:
    """The registry's namespace, its veth, the delay proxies and the registry process."""

    def __init__(self, work, build):
        self.work, self.build = work, build
        self.procs = []

    def start(self):
        self.stop_leftovers()
        run(["ip", "netns", "add", NETNS])
        run(["ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF])
        run(["ip", "link", "set", NS_IF, "netns", NETNS])
        run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF])
        run(["ip", "link", "set", HOST_IF, "up"])
        run(ns(["ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF]))
        run(ns(["ip", "link", "set", NS_IF, "up"]))
        run(ns(["ip", "link", "set", "lo", "up"]))
        os.makedirs(f"{self.work}/registry", exist_ok=True)
        cfg = f"{self.work}/registry.yml"
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.work}/registry\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n")
        self.spawn(ns(["docker-registry", "serve", cfg]), "registry")
        for name, (port, delay, _) in LINKS.items():
            self.spawn(ns([f"{self.build}/bin/coldstart_delay_proxy", "--listen", f"{NS_IP}:{port}",
                           "--upstream", f"127.0.0.1:{REGISTRY_PORT}", "--delay-ms", str(delay)]),
                       f"proxy-{name}")
        for _ in range(100):
            r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://{NS_IP}:{LINKS['unshaped'][0]}/v2/"], check=False, capture=True)
            if r.stdout == "200":
                return
            time.sleep(0.1)
        raise RuntimeError("registry did not come up")

    def spawn(self, cmd, name):
        logf = open(f"{self.work}/{name}.log", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=logf, stderr=logf))

    def shape(self, link):
        rate = LINKS[link][2]
        for dev, prefix in ((HOST_IF, []), (NS_IF, ["ip", "netns", "exec", NETNS])):
            run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], check=False, capture=True)
            if rate:
                run(prefix + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                              "burst", "256kb", "latency", "400ms"])

    def rx_bytes(self):
        return int(open(f"/sys/class/net/{HOST_IF}/statistics/rx_bytes").read())

    def host(self, link):
        return f"{NS_IP}:{LINKS[link][0]}"

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        self.stop_leftovers()

    def stop_leftovers(self):
        run(["ip", "link", "del", HOST_IF], check=False, capture=True)
        run(["ip", "netns", "del", NETNS], check=False, capture=True)


# --- images --------------------------------------------------------------------------------

def build_rootfs(work, app, rebuild):
    base = f"{work}/rootfs-base"
    if rebuild or not os.path.exists(f"{base}/.done"):
        shutil.rmtree(base, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", "bookworm", base, debian_mirror()])
        clean_apt(base)
        open(f"{base}/.done", "w").close()
    root = f"{work}/rootfs-{app}"
    if rebuild or not os.path.exists(f"{root}/.done"):
        shutil.rmtree(root, ignore_errors=True)
        run(["cp", "-a", base, root])
        os.remove(f"{root}/.done")
        shutil.copy("/etc/resolv.conf", f"{root}/etc/resolv.conf")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        run(["mount", "-t", "proc", "proc", f"{root}/proc"])
        try:
            run(["chroot", root, "apt-get", "update", "-qq"], env=env)
            run(["chroot", root, "apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                + APPS[app][0].split(), env=env)
        finally:
            run(["umount", f"{root}/proc"])
        clean_apt(root)
        os.makedirs(f"{root}/opt/bench", exist_ok=True)
        with open(f"{root}/opt/bench/blob32m", "wb") as f:
            f.write(os.urandom(32 << 20))
        open(f"{root}/.done", "w").close()
    size = dir_size(root)
    log(f"rootfs {app}: {size >> 20} MiB unpacked")
    if size < MIN_UNPACKED:
        raise RuntimeError(f"rootfs {app} is {size >> 20} MiB, below the 300 MiB the benchmark needs")
    return base, root, size


def clean_apt(root):
    for d in ["var/lib/apt/lists", "var/cache/apt"]:
        shutil.rmtree(f"{root}/{d}", ignore_errors=True)
        os.makedirs(f"{root}/{d}", exist_ok=True)


def build_layout(work, app, base, root, rebuild):
    """OCI layout with two layers: Debian minbase, then the app's packages."""
    layout = f"{work}/oci-{app}"
    if not rebuild and os.path.exists(f"{layout}/.done"):
        return layout
    shutil.rmtree(layout, ignore_errors=True)
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:base"])
    bundle = f"{work}/bundle-{app}"
    for src, tag in ((base, "base"), (root, "app")):
        shutil.rmtree(bundle, ignore_errors=True)
        run(["umoci", "unpack", "--image", f"{layout}:base", bundle])
        run(["rsync", "-aHAX", "--delete", "--exclude=/.done", f"{src}/", f"{bundle}/rootfs/"])
        run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
    shutil.rmtree(bundle, ignore_errors=True)
    config = ["umoci", "config", "--image", f"{layout}:app"]
    for arg in APPS[app][1]:
        config += ["--config.cmd", arg]
    run(config)
    run(["umoci", "gc", "--layout", layout])
    open(f"{layout}/.done", "w").close()
    return layout


class SetupContainerd:
    """A private containerd for image conversion with ctr-remote (not timed)."""

    def __init__(self, work):
        self.dir = tempfile.mkdtemp(prefix="cs-setup-", dir="/tmp")
        self.sock = f"{self.dir}/c.sock"
        with open(f"{self.dir}/config.toml", "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.dir}/opt"\n')
        self.proc = subprocess.Popen(["containerd", "--config", f"{self.dir}/config.toml"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ctr(self.sock)

    def stop(self):
        stop_proc(self.proc)
        cleanup_dir(self.dir)


def push_images(work, net, app, layout, rebuild, optimize, lazypull_cli):
    """Pushes every variant of `app` once (through the unshaped path); returns repo refs by
    variant, without host."""
    marker = f"{work}/pushed-{app}.json"
    host = net.host("unshaped")
    if not rebuild and os.path.exists(marker):
        refs = json.load(open(marker))
        if optimize and "estargz-opt" not in refs:
            push_optimized(host, app, refs, lazypull_cli)
            json.dump(refs, open(marker, "w"))
        return refs
    refs = {}
    refs["gzip"] = f"bench/{app}:gzip"
    run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:app",
         f"docker://{host}/{refs['gzip']}"])
    # eStargz by ctr-remote (stargz-snapshotter's converter), as users make them.
    c = SetupContainerd(work)
    try:
        src, dst = f"{host}/{refs['gzip']}", f"{host}/bench/{app}:estargz"
        ctr = ["ctr", "--address", c.sock, "-n", "setup"]
        run(ctr + ["images", "pull", "--plain-http", src])
        run(["ctr-remote", "--address", c.sock, "-n", "setup", "images", "convert", "--estargz",
             "--oci", src, dst])
        run(ctr + ["images", "push", "--plain-http", dst])
        refs["estargz"] = f"bench/{app}:estargz"
    finally:
        c.stop()
    # zstd:chunked by skopeo, from an uncompressed copy into a fresh repository (skopeo 1.9
    # keeps gzip when it knows the blob already: see shared/e2e-notes.md).
    shutil.rmtree("/var/lib/containers/cache", ignore_errors=True)
    plain = f"{work}/dir-{app}"
    shutil.rmtree(plain, ignore_errors=True)
    run(["skopeo", "copy", "--dest-decompress", f"oci:{layout}:app", f"dir:{plain}"])
    run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-compress-format", "zstd:chunked",
         f"dir:{plain}", f"docker://{host}/bench/{app}-zstd:chunked"])
    shutil.rmtree(plain, ignore_errors=True)
    refs["zstdchunked"] = f"bench/{app}-zstd:chunked"
    if optimize:
        push_optimized(host, app, refs, lazypull_cli)
    json.dump(refs, open(marker, "w"))
    return refs


def push_optimized(host, app, refs, lazypull_cli):
    """`lazypull convert --optimize` of the gzip image: the image's own command is run once and
    the files it opens go first in each layer (prefetched at mount)."""
    for fmt, name in (("estargz", "estargz-opt"), ("zstd:chunked", "zstdchunked-opt")):
        dst = f"bench/{app}-opt:{name}"
        run([lazypull_cli, "convert", "--format", fmt, "--plain-http", "--optimize",
             "--optimize-cmd", json.dumps(APPS[app][1]), f"{host}/{refs['gzip']}",
             f"{host}/{dst}"])
        refs[name] = dst


# --- trials --------------------------------------------------------------------------------

def wait_ctr(sock, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["ctr", "--address", sock, "version"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"containerd at {sock} did not start")


def stop_proc(proc, sig=signal.SIGTERM, timeout=20):
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cleanup_dir(d):
    # Lazy-detach anything still mounted below (overlays, FUSE layers), deepest first.
    mounts = []
    for line in open("/proc/self/mountinfo"):
        target = line.split()[4]
        if target == d or target.startswith(d + "/"):
            mounts.append(target)
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


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
        with open(f"{self.dir}/config.toml", "w") as f:
            f.write(cfg)
        self.c_log = open(f"{self.dir}/containerd.log", "w")
        self.containerd = subprocess.Popen(["containerd", "--config", f"{self.dir}/config.toml"],
                                           stdout=self.c_log, stderr=self.c_log)
        wait_ctr(self.sock)

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


def time_run(trial, pull_cmd, run_cmd, net):
    """Runs the pull then the container; returns (seconds to first output, link bytes before
    first output, output line, pull seconds)."""
    drop_caches()
    rx0 = net.rx_bytes()
    t0 = time.monotonic()
    r = subprocess.run(pull_cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pull failed: {' '.join(pull_cmd)}\n{r.stdout}{r.stderr}")
    t_pull = time.monotonic() - t0
    rx_pull = net.rx_bytes() - rx0
    p = subprocess.Popen(run_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    t1 = time.monotonic()
    rx1 = net.rx_bytes()
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
    v["estargz-nobg"] = ("estargz", "[mount]\nbackground_fetch = false\n", "ctr-remote")
    v["estargz-fuse"] = ("estargz", "[mount]\nbackend = \"fuse\"\n", "ctr-remote")
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
        row = {"link": link, "app": app, "variant": variant, "trials": len(rs),
               "median_seconds": med,
               "median_bytes_moved": statistics.median(x["bytes_moved"] for x in rs),
               "median_bytes_read": statistics.median(x["bytes_read"] for x in rs),
               "speedup_vs_full": (full_med / med) if full_med else None,
               # This variant's time ÷ stargz-snapshotter's, same run (issue 18: lazypull's
               # eStargz rows ≤ 1/1.5).
               "time_vs_stargz": (med / sg_med) if sg_med and variant != "stargz" else None,
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
          f"{'/stargz':>7} {'MiB moved':>9} {'MiB read':>8} {'serial':>6} {'load':>5}")
    for r in rows:
        sp = f"{r['speedup_vs_full']:.1f}" if r["speedup_vs_full"] else "-"
        vs = f"{r['time_vs_stargz']:.2f}" if r["time_vs_stargz"] else "-"
        # Only lazypull reports what the container read (its status.json).
        rd = f"{r['median_bytes_read'] / 2**20:8.1f}" if r["variant"] not in ("full", "stargz") \
            else f"{'-':>8}"
        lazy = r["variant"] not in ("full", "stargz")
        sd = f"{r['median_serial_depth']:6.0f}" if lazy else f"{'-':>6}"
        print(f"{r['link']:9} {r['app']:7} {r['variant']:18} {r['trials']:>2} "
              f"{r['median_seconds']:8.2f} {sp:>7} {vs:>7} {r['median_bytes_moved'] / 2**20:9.1f} "
              f"{rd} {sd} {r['median_loadavg_1m']:5.1f}")
    return rows


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    links = sorted({r["link"] for r in rows})
    # One order and one colour per variant in every panel.
    order = ["full", "stargz", "estargz", "zstdchunked", "estargz-rpull", "zstdchunked-rpull",
             "estargz-nobg", "estargz-fuse", "estargz-opt", "zstdchunked-opt"]
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
    ap.add_argument("--out", default="bench/coldstart/results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("coldstart: must run as root (namespaces, mounts, drop_caches)")
    args.build = os.path.abspath(args.build)
    if not args.variants or "stargz" in args.variants.split(","):
        build_stargzd(args.build)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    net = Network(args.work, args.build)
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
