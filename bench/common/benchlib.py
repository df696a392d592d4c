"""Pieces the host-level benchmarks share (coldstart, fleet): running commands, the registry
behind a shaped link in a network namespace, private containerd instances, process and mount
clean-up, and the Debian-built images (rootfs, OCI layout, pushed variants) kept in a work dir.

Run with /usr/bin/python3 as root; nothing here sends traffic beyond loopback and the
namespace's veth (debootstrap/apt, only when building images, use the machine's Debian mirror).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REGISTRY_PORT = 5001  # inside the namespace, loopback only
# How long tbf lets a packet queue before dropping it: the shaped link's buffer. 400 ms is
# shared/e2e-notes.md's set-up (a deep, bloated buffer: one bulk flow delays every other
# request by up to 400 ms); LAZYPULL_BENCH_TBF_LATENCY (e.g. 50ms) models a shallow one.
TBF_LATENCY = os.environ.get("LAZYPULL_BENCH_TBF_LATENCY", "400ms")

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
    """The registry's namespace, its veth, the delay proxies and the registry process.

    `name` names the namespace and the veth ends (`<name>0` on the host, `<name>1` inside);
    `subnet` is the first three octets of their /24 (host .1, namespace .2), so benchmarks
    with different names can run side by side. The registry stores under `work`/registry;
    logs go to `logs` (default `work`); `registry_log` is the registry's log level (above
    "error" it logs every request as a JSON line)."""

    def __init__(self, work, build, name="lpcs", subnet="10.231.0", logs=None,
                 registry_log="error"):
        self.work, self.build = work, build
        self.registry_log = registry_log
        self.logs = logs or work
        self.netns = name
        self.host_if, self.ns_if = f"{name}0", f"{name}1"
        self.host_ip, self.ns_ip = f"{subnet}.1", f"{subnet}.2"
        self.procs = []

    def ns(self, cmd):
        return ["ip", "netns", "exec", self.netns] + cmd

    def start(self):
        self.stop_leftovers()
        run(["ip", "netns", "add", self.netns])
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        run(["ip", "link", "set", self.ns_if, "netns", self.netns])
        run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        run(self.ns(["ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if]))
        run(self.ns(["ip", "link", "set", self.ns_if, "up"]))
        run(self.ns(["ip", "link", "set", "lo", "up"]))
        os.makedirs(f"{self.work}/registry", exist_ok=True)
        cfg = f"{self.logs}/registry.yml"
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: {self.registry_log}\n"
                    + ("  formatter: json\n" if self.registry_log != "error" else "")
                    + "storage:\n  filesystem:\n"
                    f"    rootdirectory: {self.work}/registry\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n")
        self.spawn(self.ns(["docker-registry", "serve", cfg]), "registry")
        for name, (port, delay, _) in LINKS.items():
            self.spawn(self.ns([f"{self.build}/bin/coldstart_delay_proxy",
                                "--listen", f"{self.ns_ip}:{port}",
                                "--upstream", f"127.0.0.1:{REGISTRY_PORT}",
                                "--delay-ms", str(delay)]),
                       f"proxy-{name}")
        for _ in range(100):
            r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://{self.host('unshaped')}/v2/"], check=False, capture=True)
            if r.stdout == "200":
                return
            time.sleep(0.1)
        raise RuntimeError("registry did not come up")

    def spawn(self, cmd, name):
        logf = open(f"{self.logs}/{name}.log", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=logf, stderr=logf))

    def shape(self, link):
        rate = LINKS[link][2]
        for dev, prefix in ((self.host_if, []), (self.ns_if, self.ns([]))):
            run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], check=False, capture=True)
            if rate:
                run(prefix + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                              "burst", "256kb", "latency", TBF_LATENCY])

    def rx_bytes(self):
        return int(open(f"/sys/class/net/{self.host_if}/statistics/rx_bytes").read())

    def host(self, link):
        return f"{self.ns_ip}:{LINKS[link][0]}"

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
        run(["ip", "link", "del", self.host_if], check=False, capture=True)
        run(["ip", "netns", "del", self.netns], check=False, capture=True)


# --- images -------------------------------------------------------------------------------

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
        if refs.get("soci_layout") != SOCI_LAYOUT:
            push_soci(work, host, app, refs, lazypull_cli)
            json.dump(refs, open(marker, "w"))
        return refs
    refs = {}
    refs["gzip"] = f"bench/{app}:gzip"
    # skopeo's blob-info cache knows the zstd:chunked copy of the shared base layer once one
    # app's zstd image is pushed, and would push THAT as this "gzip" image's base layer.
    shutil.rmtree("/var/lib/containers/cache", ignore_errors=True)
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
    push_soci(work, host, app, refs, lazypull_cli)
    json.dump(refs, open(marker, "w"))
    return refs


# What `index create`'s defaults make; images pushed by an older one are indexed again (2:
# checkpoints around large files, --large-file-spans; 5: lazypull's fine index next to each
# zTOC, --fine-index, 128 KiB fine spans).
SOCI_LAYOUT = 5


def push_soci(work, host, app, refs, lazypull_cli):
    """The gzip image, untouched, plus its SOCI index: `lazypull index create` with its default
    settings (span size, minimum layer size, checkpoints around large files) writes the
    SOCI-enabled image (v2) `soci`; with 1 MiB spans (not the default: 4x the checkpoints, a
    quarter of the bytes per span) `soci-1m`; with soci's own checkpoints exactly (no
    checkpoints around large files: `--large-file-spans 0`) `soci-exact`. The defaults include
    lazypull's fine index (small spans, windows in their own blob), which the daemon prefers;
    soci-1m and soci-exact leave it out (`--fine-index=false`), so they measure soci's zTOC
    path. Each report (one line per layer: zTOC digest, size, spans; fine blobs' sizes) goes to
    <work>/<name>-<app>.log."""
    for name, flags in (("soci", []),
                        ("soci-1m", ["--span-size", "1MiB", "--fine-index=false"]),
                        ("soci-exact", ["--large-file-spans", "0", "--fine-index=false"])):
        dst = f"bench/{app}:{name}-l{SOCI_LAYOUT}"
        r = run([lazypull_cli, "index", "create", "--plain-http"] + flags +
                [f"{host}/{refs['gzip']}", f"{host}/{dst}"], capture=True)
        with open(f"{work}/{name}-{app}.log", "w") as f:
            f.write(r.stdout + r.stderr)
        refs[name] = dst
    refs["soci_layout"] = SOCI_LAYOUT


def push_optimized(host, app, refs, lazypull_cli):
    """`lazypull convert --optimize` of the gzip image: the image's own command is run once and
    the files it opens go first in each layer (prefetched at mount)."""
    for fmt, name in (("estargz", "estargz-opt"), ("zstd:chunked", "zstdchunked-opt")):
        dst = f"bench/{app}-opt:{name}"
        run([lazypull_cli, "convert", "--format", fmt, "--plain-http", "--optimize",
             "--optimize-cmd", json.dumps(APPS[app][1]), f"{host}/{refs['gzip']}",
             f"{host}/{dst}"])
        refs[name] = dst


# --- processes ----------------------------------------------------------------------------

def wait_ctr(sock, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["ctr", "--address", sock, "version"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"containerd at {sock} did not start")


def start_containerd(directory, cfg, sock):
    """Writes `cfg` to <directory>/config.toml and starts containerd on it, logging to
    <directory>/containerd.log; returns (process, log file) once `sock` answers."""
    with open(f"{directory}/config.toml", "w") as f:
        f.write(cfg)
    log_file = open(f"{directory}/containerd.log", "w")
    proc = subprocess.Popen(["containerd", "--config", f"{directory}/config.toml"],
                            stdout=log_file, stderr=log_file)
    wait_ctr(sock)
    return proc, log_file


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
