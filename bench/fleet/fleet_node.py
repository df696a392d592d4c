"""fleet.py's parts: one simulated node (containerd + lazypull-snapshotter with the default
configuration), the pull-through cache (Debian docker-registry in proxy mode), hosts.toml."""
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request

from benchlib import cleanup_dir, log, run, start_containerd, stop_proc

CACHE_PORT = 5071  # the cache, on loopback
METRICS_BASE = 9310  # node i serves /metrics on 127.0.0.1:METRICS_BASE+i
FINAL_BACKGROUND = ("done", "failed", "incomplete", "stopped")


def write_hosts(certs, upstream, mirror):
    """containerd's hosts.toml for `upstream`: plain HTTP, `mirror` (host:port) first if any."""
    os.makedirs(f"{certs}/{upstream}", exist_ok=True)
    text = f'server = "http://{upstream}"\n'
    if mirror:
        text += f'\n[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    with open(f"{certs}/{upstream}/hosts.toml", "w") as f:
        f.write(text)


def registry_log_summary(path, offset, by_agent=False):
    """Requests a docker-registry answered (its JSON "response completed" lines) since byte
    `offset` of its log: body bytes written and counts by "METHOD kind status" (kind: blob or
    manifest), optionally prefixed by the client's user agent (lazypull or the cache's Go
    client)."""
    out = {"bytes_served": 0, "requests": {}}
    with open(path) as f:
        f.seek(offset)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("msg") != "response completed":
                continue
            out["bytes_served"] += int(e.get("http.response.written", 0))
            uri = e.get("http.request.uri", "")
            kind = "blob" if "/blobs/" in uri else "manifest" if "/manifests/" in uri else "other"
            key = f"{e.get('http.request.method', '?')} {kind} {e.get('http.response.status')}"
            if by_agent:
                key = e.get("http.request.useragent", "?").split("/")[0] + " " + key
            out["requests"][key] = out["requests"].get(key, 0) + 1
    return out


def request_timeline(path, offset, t0_wall):
    """Blob requests a docker-registry answered since byte `offset` of its log, as
    [start, end] seconds relative to `t0_wall` (wall clock), client, method, status and body
    bytes written: when the cache's copies and the nodes' reads ran (fleet.py --timeline)."""
    from datetime import datetime
    out = []
    with open(path) as f:
        f.seek(offset)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("msg") != "response completed" or "/blobs/" not in e.get("http.request.uri", ""):
                continue
            t = e["time"]
            m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?Z", t)
            end = datetime.fromisoformat(m.group(1) + "+00:00").timestamp() + \
                float("0" + (m.group(2) or ".0")[:8])
            d = e.get("http.response.duration", "0s")
            unit = re.match(r"([0-9.]+)(ns|µs|us|ms|s|m)", d)
            dur = float(unit.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1,
                                          "m": 60}[unit.group(2)] if unit else 0.0
            if re.match(r"[0-9.]+m[0-9]", d):  # "1m2.5s"
                mm = re.match(r"([0-9]+)m([0-9.]+)s", d)
                dur = int(mm.group(1)) * 60 + float(mm.group(2))
            out.append([round(end - dur - t0_wall, 3), round(end - t0_wall, 3),
                        e.get("http.request.useragent", "?").split("/")[0],
                        e.get("http.request.method"), e.get("http.response.status"),
                        int(e.get("http.response.written", 0))])
    out.sort()
    return out


class Cache:
    """docker-registry in proxy mode on 127.0.0.1:CACHE_PORT in front of `upstream`, storing
    under `dir`, logging every request as a JSON line (what it served is read from there)."""

    def __init__(self, dir, upstream):
        self.dir = dir
        os.makedirs(f"{dir}/storage", exist_ok=True)
        cfg = f"{dir}/cache.yml"
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\n  formatter: json\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {dir}/storage\n"
                    f"  delete:\n    enabled: true\n"
                    f"http:\n  addr: 127.0.0.1:{CACHE_PORT}\n"
                    f"proxy:\n  remoteurl: http://{upstream}\n")
        self.log_path = f"{dir}/cache.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=self.log_file,
                                     stderr=self.log_file)
        for _ in range(100):
            r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://127.0.0.1:{CACHE_PORT}/v2/"], check=False, capture=True)
            if r.stdout == "200":
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cache did not come up: {open(self.log_path).read()[-2000:]}")

    def log_offset(self):
        self.log_file.flush()
        return os.path.getsize(self.log_path)

    def served_since(self, offset):
        """What the cache answered since log offset `offset` (registry_log_summary)."""
        return registry_log_summary(self.log_path, offset)

    def wait_stored(self, digests, timeout):
        """Waits until the cache has stored every blob of `digests` in its own storage."""
        deadline = time.time() + timeout
        paths = [f"{self.dir}/storage/docker/registry/v2/blobs/sha256/{d[7:9]}/{d[7:]}/data"
                 for d in digests]
        while time.time() < deadline:
            if all(os.path.exists(p) for p in paths):
                return
            time.sleep(0.5)
        raise RuntimeError("the cache did not store the image's blobs in time")

    def stop(self):
        if self.proc:
            stop_proc(self.proc)
            self.proc = None
            self.log_file.close()


class Node:
    """One node: a fresh containerd and (for lazy rows) a fresh lazypull-snapshotter in a temp
    dir, both reading registries through `certs` (hosts.toml). lazypull's config is the
    default except its log level and config_path; root, socket and metrics port are its own."""

    def __init__(self, args, row, i, certs, lazy):
        self.args, self.row, self.i = args, row, i
        self.dir = tempfile.mkdtemp(prefix=f"fl-{row}-{i}-", dir="/tmp")
        self.sock = f"{self.dir}/c.sock"
        self.lp_sock = f"{self.dir}/lp.sock"
        self.certs = certs
        self.metrics = f"127.0.0.1:{METRICS_BASE + i}"
        self.lp = None
        self.containerd = None
        self.snapshotter = "lazypull" if lazy else "overlayfs"
        try:
            self._start(lazy)
        except BaseException:
            self.stop()
            raise

    def _start(self, lazy):
        cfg = (f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
               f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
               f'[grpc]\n  address = "{self.sock}"\n'
               f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.dir}/opt"\n')
        if lazy:
            cfg += f'[proxy_plugins.lazypull]\n  type = "snapshot"\n  address = "{self.lp_sock}"\n'
            with open(f"{self.dir}/lazypull.toml", "w") as f:
                f.write(f'log_level = "{self.args.log_level}"\n'
                        f'[registry]\nconfig_path = "{self.certs}"\n')
            self.lp_log = open(f"{self.dir}/lazypull.log", "w")
            self.lp = subprocess.Popen(
                [f"{self.args.build}/bin/lazypull-snapshotter", "--config",
                 f"{self.dir}/lazypull.toml", "--root", f"{self.dir}/lp", "--address",
                 self.lp_sock, "--metrics-address", self.metrics],
                stdout=self.lp_log, stderr=self.lp_log)
            for _ in range(200):
                if os.path.exists(self.lp_sock) or self.lp.poll() is not None:
                    break
                time.sleep(0.05)
            if self.lp.poll() is not None:
                raise RuntimeError(f"lazypull-snapshotter exited ({self.lp.returncode}): "
                                   f"{open(self.lp_log.name).read()[-2000:]}")
        self.containerd, self.c_log = start_containerd(self.dir, cfg, self.sock)

    def ctr(self, *a):
        return ["ctr", "--address", self.sock, "-n", "bench"] + list(a)

    def start_image(self, ref, cmd, t0):
        """Pulls `ref` (lazily with ctr-remote rpull, or a full pull) and runs `cmd` in it;
        returns seconds from `t0` to its first output line."""
        if self.lp:
            pull = ["ctr-remote", "--address", self.sock, "-n", "bench", "images", "rpull",
                    "--plain-http", "--hosts-dir", self.certs, "--snapshotter", "lazypull", ref]
        else:
            pull = self.ctr("images", "pull", "--plain-http", "--hosts-dir", self.certs, ref)
        r = subprocess.run(pull, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"pull failed: {' '.join(pull)}\n{r.stdout}{r.stderr}")
        t_pull = time.monotonic() - t0
        runc = self.ctr("run", "--rm", "--snapshotter", self.snapshotter, ref,
                        f"fl{self.i}") + cmd
        p = subprocess.Popen(runc, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        t1 = time.monotonic() - t0
        rest, err = p.communicate(timeout=600)
        if p.returncode != 0 or not line:
            raise RuntimeError(f"run failed ({p.returncode}): {' '.join(runc)}\n{line}{rest}{err}")
        return {"seconds": t1, "pull_seconds": t_pull, "output": line.strip()}

    def status(self):
        try:
            return json.load(open(f"{self.dir}/lp/status.json"))
        except (OSError, ValueError):
            return {}

    def wait_background(self, timeout):
        """Waits until every lazy layer's background fetch reached a final state."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            layers = self.status().get("layers", [])
            if layers and all(l.get("background") in FINAL_BACKGROUND for l in layers):
                return
            time.sleep(0.5)
        raise RuntimeError(f"node {self.i}: background fetch not finished in {timeout} s: "
                           f"{json.dumps(self.status().get('layers', []))[:2000]}")

    def metrics_text(self):
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""

    def stats(self):
        """The node's fetch counters: status.json's per-layer numbers and /metrics' registry
        and mirror-fallback counters."""
        out = {}
        if not self.lp:
            return out
        layers = self.status().get("layers", [])
        for k in ("bytes_fetched", "background_bytes", "requests", "bytes_read"):
            out[k] = sum(l.get(k, 0) for l in layers)
        out["background"] = [l.get("background") for l in layers]
        out["fetched_percent"] = [l.get("fetched_percent") for l in layers]
        for line in self.metrics_text().splitlines():
            m = re.match(r"(lazypull_(?:registry_mirror_fallbacks_total|fetched_bytes_total|"
                         r"fetch_requests_total|fetch_errors_total|background_fetched_bytes_total"
                         r"|verification_failures_total)(\{[^}]*\})?) ([0-9.e+]+)$", line)
            if m:
                out[m.group(1)] = float(m.group(3))
        return out

    def stop(self):
        """Removes everything the node started: its containers (a failed run may leave one
        with its shim), containerd, lazypull, mounts and the dir."""
        if self.containerd and self.containerd.poll() is None:
            r = subprocess.run(self.ctr("tasks", "ls", "-q"), capture_output=True, text=True)
            for cid in r.stdout.split():
                subprocess.run(self.ctr("tasks", "kill", "-s", "SIGKILL", cid),
                               capture_output=True)
                subprocess.run(self.ctr("tasks", "delete", "-f", cid), capture_output=True)
            r = subprocess.run(self.ctr("containers", "ls", "-q"), capture_output=True, text=True)
            for cid in r.stdout.split():
                subprocess.run(self.ctr("containers", "delete", cid), capture_output=True)
        if self.containerd:
            stop_proc(self.containerd)
        if self.lp:
            stop_proc(self.lp)
        self._kill_shims()
        if self.args.keep:
            log(f"kept {self.dir}")
            for m in self._mounts():
                subprocess.run(["umount", "-l", m], capture_output=True)
        else:
            cleanup_dir(self.dir)

    def _mounts(self):
        out = []
        for line in open("/proc/self/mountinfo"):
            target = line.split()[4]
            if target == self.dir or target.startswith(self.dir + "/"):
                out.append(target)
        return sorted(out, key=len, reverse=True)

    def _kill_shims(self):
        # A shim whose containerd is gone names this node's socket in its command line.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                    self.sock.encode() in argv:
                log(f"node {self.i}: killing leftover shim {pid}")
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
