#include "tests/remote/remote_test_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fetcher/codec/gzip.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/registry/reference.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

absl::Status Sh(const std::string& script,
                std::chrono::seconds timeout = std::chrono::seconds(180)) {
  absl::StatusOr<CommandResult> r = RunShell(script, timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("command failed (", r->exit_code, "): ", script, "\n", r->output));
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> SnapshotAnnotations(const oci::Descriptor& layer) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : layer.annotations) {
    if (absl::StartsWith(k, "containerd.io/snapshot/")) out[k] = v;
  }
  return out;
}

std::string LayersLabel(const PushedImage& image, size_t from) {
  std::vector<std::string> digests;
  for (size_t i = from; i < image.resolved.manifest.layers.size(); ++i) {
    digests.push_back(image.resolved.manifest.layers[i].digest.ToString());
  }
  return absl::StrJoin(digests, ",");
}

std::map<std::string, std::string> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  char names[8192];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof(names));
  for (ssize_t i = 0; n > 0 && i < n;) {
    std::string name(names + i);
    i += name.size() + 1;
    // user.overlay.* on a lazy layer's opaque dirs is the overlay protocol itself (for
    // `userxattr` overlays); a non-userxattr overlay passes it through, so it is not content.
    if (!absl::StartsWith(name, "user.") || absl::StartsWith(name, "user.overlay.")) continue;
    char value[8192];
    ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), value, sizeof(value));
    out[name] = v >= 0 ? std::string(value, v) : "<error>";
  }
  return out;
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void CompareRec(const std::string& exp, const std::string& act, const std::string& rel,
                const std::vector<std::string>& ignore, std::vector<std::string>* diffs) {
  std::vector<std::string> e = Entries(exp + rel), a = Entries(act + rel);
  if (rel.empty()) {
    auto drop = [&](std::vector<std::string>& v) {
      std::erase_if(v, [&](const std::string& n) {
        return std::find(ignore.begin(), ignore.end(), n) != ignore.end();
      });
    };
    drop(e);
    drop(a);
  }
  if (e != a) {
    diffs->push_back(absl::StrCat(rel.empty() ? "/" : rel, ": entries differ: expected [",
                                  absl::StrJoin(e, ","), "] got [", absl::StrJoin(a, ","), "]"));
  }
  for (const std::string& name : e) {
    if (std::find(a.begin(), a.end(), name) == a.end()) continue;
    std::string r = rel + "/" + name;
    struct stat se, sa;
    if (::lstat((exp + r).c_str(), &se) != 0 || ::lstat((act + r).c_str(), &sa) != 0) {
      diffs->push_back(absl::StrCat(r, ": lstat failed: ", strerror(errno)));
      continue;
    }
    auto diff = [&](const char* what, auto x, auto y) {
      if (x != y) diffs->push_back(absl::StrCat(r, ": ", what, " expected ", x, " got ", y));
    };
    diff("mode", se.st_mode, sa.st_mode);
    diff("uid", se.st_uid, sa.st_uid);
    diff("gid", se.st_gid, sa.st_gid);
    if (!S_ISDIR(se.st_mode)) diff("mtime", se.st_mtim.tv_sec, sa.st_mtim.tv_sec);
    if (auto want = Xattrs(exp + r), got = Xattrs(act + r); want != got) {
      auto show = [](const std::map<std::string, std::string>& m) {
        std::string out;
        for (const auto& [k, v] : m)
          absl::StrAppend(&out, out.empty() ? "" : " ", k, "=\"", v, "\"");
        return out;
      };
      diffs->push_back(
          absl::StrCat(r, ": xattrs differ: want {", show(want), "} got {", show(got), "}"));
    }
    if (S_ISREG(se.st_mode)) {
      diff("size", se.st_size, sa.st_size);
      diff("nlink", se.st_nlink, sa.st_nlink);
      absl::StatusOr<std::string> be = ReadFile(exp + r), ba = ReadFile(act + r);
      if (!ba.ok()) {
        diffs->push_back(absl::StrCat(r, ": read failed: ", ba.status().ToString()));
      } else if (!be.ok() || *be != *ba) {
        diffs->push_back(absl::StrCat(r, ": content differs"));
      }
    } else if (S_ISLNK(se.st_mode)) {
      char te[4096], ta[4096];
      ssize_t ne = ::readlink((exp + r).c_str(), te, sizeof(te));
      ssize_t na = ::readlink((act + r).c_str(), ta, sizeof(ta));
      if (ne < 0 || na < 0 || std::string(te, ne) != std::string(ta, na)) {
        diffs->push_back(absl::StrCat(r, ": symlink target differs"));
      }
    } else if (S_ISCHR(se.st_mode) || S_ISBLK(se.st_mode)) {
      diff("rdev", se.st_rdev, sa.st_rdev);
    } else if (S_ISDIR(se.st_mode)) {
      CompareRec(exp, act, r, ignore, diffs);
    }
  }
}

}  // namespace

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

LayerChanges BigFilesLayer() {
  LayerChanges c;
  c.files = {
      {.path = "/data/big.bin", .content = RandomBytes(1 << 20, 1)},
      {.path = "/data/other.bin", .content = RandomBytes(3 << 20, 2)},
      {.path = "/data/text.txt", .content = std::string(200000, 'a') + "end\n"},
      {.path = "/data/exec.sh", .content = "#!/bin/sh\necho hi\n", .mode = 0755},
      {.path = "/data/owned",
       .content = "owned by 1000:1001\n",
       .mode = 0640,
       .uid = 1000,
       .gid = 1001},
      {.path = "/data/empty", .content = ""},
      {.path = "/etc/greeting", .content = "hello from the lazy layer\n"},
      {.path = "/old/gone.txt", .content = "deleted by the next layer\n"},
      {.path = "/old/dir/a", .content = "a\n"},
      {.path = "/old/dir/b", .content = "b\n"},
      {.path = "/old/kept.txt", .content = "kept\n"},
  };
  c.dirs = {{.path = "/data/private", .mode = 0700}};
  c.symlinks = {{.path = "/data/link", .target = "big.bin"},
                {.path = "/data/abs-link", .target = "/etc/greeting"}};
  c.hardlinks = {{.path = "/data/big-hardlink", .target = "/data/big.bin"}};
  return c;
}

LayerChanges DeletionsLayer() {
  LayerChanges c;
  c.deletions = {"/old/gone.txt", "/old/dir"};
  c.files = {{.path = "/old/new.txt", .content = "added on top\n"},
             {.path = "/data/text.txt", .content = "replaced\n"},
             {.path = "/top/x", .content = RandomBytes(100000, 3)}};
  c.hardlinks = {{.path = "/top/x-link", .target = "/top/x"}};
  return c;
}

namespace {
// Markers of big/huge.bin (all else is zeros).
constexpr char kHugeHead[] = "huge file head\n";
constexpr char kHugeBoundary[] = "<-4GiB->";  // 8 bytes centred on offset 4 GiB
constexpr char kHugeTail[] = "huge file tail\n";
}  // namespace

std::string HugeBytes(uint64_t offset, size_t length, uint64_t size) {
  std::string out(length, '\0');
  auto put = [&](uint64_t at, std::string_view marker) {
    for (size_t i = 0; i < marker.size(); ++i) {
      if (at + i >= offset && at + i < offset + length) out[at + i - offset] = marker[i];
    }
  };
  put(0, kHugeHead);
  if ((4ull << 30) - 4 + sizeof(kHugeBoundary) - 1 <= size - (sizeof(kHugeTail) - 1)) {
    put((4ull << 30) - 4, kHugeBoundary);
  }
  put(size - (sizeof(kHugeTail) - 1), kHugeTail);
  return out;
}

absl::StatusOr<std::string> BuildHugeSparseLayout(const std::string& work_dir, uint64_t size,
                                                  const std::string& name) {
  const std::string layout = work_dir + "/" + name;
  // Python writes the tar stream (hashing it for the diff_id) into pigz, then the OCI layout.
  std::string script = absl::StrCat(R"PY(
import hashlib, io, json, os, subprocess, sys, tarfile
L = sys.argv[1]
os.makedirs(L + '/blobs/sha256', exist_ok=True)
size, head, boundary, tail = int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4].encode(), sys.argv[5].encode()
marks = [(0, head), ((4 << 30) - 4, boundary), (size - len(tail), tail)]
class Content(io.RawIOBase):
    def __init__(self): self.pos = 0
    def readable(self): return True
    def readinto(self, b):
        n = min(len(b), size - self.pos)
        if n <= 0: return 0
        b[:n] = bytes(n)
        for at, m in marks:
            for i in range(len(m)):
                if self.pos <= at + i < self.pos + n: b[at + i - self.pos] = m[i]
        self.pos += n
        return n
gz = open(L + '/layer.gz', 'wb')
p = subprocess.Popen(['pigz', '-1', '-c'], stdin=subprocess.PIPE, stdout=gz)
diff = hashlib.sha256()
class Out:
    def write(self, b):
        diff.update(b); p.stdin.write(b); return len(b)
t = tarfile.open(fileobj=Out(), mode='w|', format=tarfile.PAX_FORMAT)
d = tarfile.TarInfo('big'); d.type = tarfile.DIRTYPE; d.mode = 0o755; d.mtime = 1700000000
t.addfile(d)
f = tarfile.TarInfo('big/huge.bin'); f.size = size; f.mode = 0o644; f.mtime = 1700000000
t.addfile(f, io.BufferedReader(Content(), 1 << 20))
t.close()
p.stdin.close(); p.wait(); gz.close()
def blob(data=None, path=None):
    if path: data = open(path, 'rb').read()
    h = hashlib.sha256(data).hexdigest()
    open(L + '/blobs/sha256/' + h, 'wb').write(data)
    return {'digest': 'sha256:' + h, 'size': len(data)}
layer = blob(path=L + '/layer.gz'); os.remove(L + '/layer.gz')
config = blob(json.dumps({'architecture': 'amd64', 'os': 'linux', 'config': {},
    'rootfs': {'type': 'layers', 'diff_ids': ['sha256:' + diff.hexdigest()]}}).encode())
manifest = blob(json.dumps({'schemaVersion': 2,
    'mediaType': 'application/vnd.oci.image.manifest.v1+json',
    'config': dict(config, mediaType='application/vnd.oci.image.config.v1+json'),
    'layers': [dict(layer, mediaType='application/vnd.oci.image.layer.v1.tar+gzip')]}).encode())
json.dump({'imageLayoutVersion': '1.0.0'}, open(L + '/oci-layout', 'w'))
json.dump({'schemaVersion': 2, 'manifests': [dict(manifest,
    mediaType='application/vnd.oci.image.manifest.v1+json',
    annotations={'org.opencontainers.image.ref.name': 'v1'})]}, open(L + '/index.json', 'w'))
)PY");
  if (absl::Status s = WriteFile(work_dir + "/huge.py", script); !s.ok()) return s;
  absl::Status s = Sh(absl::StrCat("python3 ", work_dir, "/huge.py ", layout, " ", size, " '",
                                   kHugeHead, "' '", kHugeBoundary, "' '", kHugeTail, "'"),
                      std::chrono::seconds(300));
  if (!s.ok()) return s;
  return layout;
}

absl::Status WriteOneLayerLayout(const std::string& layout, const std::string& blob,
                                 const std::map<std::string, std::string>& annotations,
                                 const std::optional<Digest>& diff_id) {
  absl::StatusOr<std::string> tar = codec::Gunzip(blob, {.max_output = 1ull << 30});
  if (!tar.ok()) return tar.status();
  if (absl::Status s = Sh("mkdir -p " + layout + "/blobs/sha256"); !s.ok()) return s;
  auto put = [&](const std::string& data) -> absl::StatusOr<nlohmann::json> {
    const Digest d = Digest::Of(data);
    if (absl::Status s = WriteFile(layout + "/blobs/sha256/" + d.hex(), data); !s.ok()) return s;
    return nlohmann::json{{"digest", d.ToString()}, {"size", data.size()}};
  };
  absl::StatusOr<nlohmann::json> layer = put(blob);
  if (!layer.ok()) return layer.status();
  (*layer)["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip";
  if (!annotations.empty()) (*layer)["annotations"] = annotations;
  absl::StatusOr<nlohmann::json> config = put(nlohmann::json{
      {"architecture", "amd64"},
      {"os", "linux"},
      {"config", nlohmann::json::object()},
      {"rootfs",
       {{"type", "layers"}, {"diff_ids", {diff_id.value_or(Digest::Of(*tar)).ToString()}}}}}
                                                  .dump());
  if (!config.ok()) return config.status();
  (*config)["mediaType"] = "application/vnd.oci.image.config.v1+json";
  absl::StatusOr<nlohmann::json> manifest = put(nlohmann::json{
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config", *config},
      {"layers", {*layer}}}.dump());
  if (!manifest.ok()) return manifest.status();
  (*manifest)["mediaType"] = "application/vnd.oci.image.manifest.v1+json";
  (*manifest)["annotations"] = {{"org.opencontainers.image.ref.name", "v1"}};
  if (absl::Status s = WriteFile(layout + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
      !s.ok()) {
    return s;
  }
  return WriteFile(layout + "/index.json",
                   nlohmann::json{{"schemaVersion", 2}, {"manifests", {*manifest}}}.dump());
}

absl::Status BuildRemoteTestImages(RemoteTestImages& im) {
  absl::StatusOr<std::unique_ptr<RegistryProcess>> reg = RegistryProcess::Start(im.dir.Sub("reg"));
  if (!reg.ok()) return reg.status();
  im.registry = std::move(*reg);
  ImageBuilder b(im.dir.Sub("image"));
  b.AddLayer(LayerChanges::Busybox()).AddLayer(BigFilesLayer()).AddLayer(DeletionsLayer());
  b.SetCmd({"/bin/sh"});
  absl::StatusOr<BuiltImage> built = b.Build("v1");
  if (!built.ok()) return built.status();
  // A 4th layer made by hand: /old becomes an opaque directory (`.wh..wh..opq`), which
  // umoci's own diffing never writes, with one new file in it.
  absl::StatusOr<CommandResult> opaque = RunShell(
      absl::StrCat("set -e; cd ", im.dir.path(), "; python3 - <<'PY'\n", "import io, tarfile\n",
                   "t = tarfile.open('opaque.tar', 'w', format=tarfile.PAX_FORMAT)\n",
                   "d = tarfile.TarInfo('old/'); d.type = tarfile.DIRTYPE; d.mode = 0o755; "
                   "d.mtime = 1700000000; t.addfile(d)\n",
                   "w = tarfile.TarInfo('old/.wh..wh..opq'); w.mtime = 1700000000; t.addfile(w)\n",
                   "data = b'only file after the opaque dir\\n'\n",
                   "f = tarfile.TarInfo('old/after-opaque.txt'); f.size = len(data); "
                   "f.mode = 0o644; f.mtime = 1700000001; t.addfile(f, io.BytesIO(data))\n",
                   // User xattrs (PAX SCHILY.xattr.*) on a file and a directory.
                   "x = tarfile.TarInfo('xattrs/'); x.type = tarfile.DIRTYPE; x.mode = 0o755; "
                   "x.mtime = 1700000002; x.pax_headers = {'SCHILY.xattr.user.tag': 'dir'}; "
                   "t.addfile(x)\n",
                   "data = b'has xattrs\\n'\n",
                   "x = tarfile.TarInfo('xattrs/file'); x.size = len(data); x.mode = 0o644; "
                   "x.mtime = 1700000003; x.pax_headers = {'SCHILY.xattr.user.color': 'blue', "
                   "'SCHILY.xattr.user.empty': ''}; t.addfile(x, io.BytesIO(data))\n",
                   // A sparse file: 8 MiB of zeros between two data blocks (zstd:chunked holes).
                   "import random\n",
                   "r = random.Random(7); data = bytes(r.getrandbits(8) for _ in range(65536))\n",
                   "data = data + bytes(8 << 20) + data\n",
                   "x = tarfile.TarInfo('xattrs/sparse.bin'); x.size = len(data); x.mode = 0o644; "
                   "x.mtime = 1700000004; t.addfile(x, io.BytesIO(data))\n",
                   "t.close()\n", "PY\n", "umoci raw add-layer --image ", built->layout_dir,
                   ":v1 opaque.tar"),
      std::chrono::seconds(120));
  if (!opaque.ok()) return opaque.status();
  if (opaque->exit_code != 0) return absl::InternalError("opaque layer: " + opaque->output);
  built = ReadOciLayout(built->layout_dir, "v1");
  if (!built.ok()) return built.status();
  im.src = *built;
  const std::string host = im.registry->host();
  if (absl::Status s = im.registry->PushOciLayout(im.src.layout_dir, "v1", "src:v1"); !s.ok()) {
    return s;
  }
  if (absl::Status s = LazypullConvert("estargz", host + "/src:v1", host + "/esgz:v1"); !s.ok()) {
    return s;
  }
  if (absl::Status s = LazypullConvert("zstd:chunked", host + "/src:v1", host + "/zc:v1");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          PushZstdChunkedWithSkopeo(im.dir.path(), im.src.layout_dir, "v1", host + "/skopeo-zc:v1");
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> rootfs =
      UnpackRootfs(im.src.layout_dir, "v1", im.dir.Sub("unpacked"));
  if (!rootfs.ok()) return rootfs.status();
  im.rootfs = *rootfs;
  return absl::OkStatus();
}

absl::StatusOr<PushedImage> ResolvePushed(const std::string& ref) {
  absl::StatusOr<registry::Reference> parsed = registry::ParseReference(ref);
  if (!parsed.ok()) return parsed.status();
  registry::RegistryClient client(registry::RegistryConfig{}, registry::NewCurlTransport());
  absl::StatusOr<registry::ResolvedImage> resolved = client.Resolve(*parsed);
  if (!resolved.ok()) return resolved.status();
  return PushedImage{.ref = ref, .resolved = std::move(*resolved)};
}

absl::Status LazypullConvert(const std::string& format, const std::string& src,
                             const std::string& dst, const std::string& extra_flags) {
  return Sh(absl::StrCat(BinaryDir(), "/bin/lazypull convert --format ", format, " --plain-http ",
                         extra_flags, " ", src, " ", dst));
}

absl::Status PushZstdChunkedWithSkopeo(const std::string& work_dir, const std::string& layout,
                                       const std::string& tag, const std::string& dst_ref) {
  // oci → uncompressed oci → zstd:chunked oci → registry: every step copies blobs as they
  // are, except the recompression, which skopeo cannot skip for uncompressed sources.
  return Sh(
      absl::StrCat("set -e; cd ", work_dir, "; rm -rf zu zc; ",
                   "skopeo copy --quiet --dest-decompress oci:", layout, ":", tag, " oci:zu:t; ",
                   "skopeo copy --quiet --dest-compress-format zstd:chunked "
                   "--dest-compress oci:zu:t oci:zc:t; ",
                   "skopeo copy --quiet --dest-tls-verify=false oci:zc:t docker://", dst_ref));
}

std::map<std::string, std::string> StargzLabels(const PushedImage& image, size_t i,
                                                const std::string& target) {
  const oci::Descriptor& layer = image.resolved.manifest.layers.at(i);
  std::map<std::string, std::string> labels = SnapshotAnnotations(layer);
  labels["containerd.io/snapshot.ref"] = target;
  labels["containerd.io/snapshot/remote/stargz.reference"] = image.ref;
  labels["containerd.io/snapshot/remote/stargz.digest"] = layer.digest.ToString();
  labels["containerd.io/snapshot/remote/stargz.layers"] = LayersLabel(image, i);
  return labels;
}

std::map<std::string, std::string> CriLabels(const PushedImage& image, size_t i,
                                             const std::string& target) {
  const oci::Descriptor& layer = image.resolved.manifest.layers.at(i);
  std::map<std::string, std::string> labels = SnapshotAnnotations(layer);
  labels["containerd.io/snapshot.ref"] = target;
  labels["containerd.io/snapshot/cri.image-ref"] = image.ref;
  labels["containerd.io/snapshot/cri.layer-digest"] = layer.digest.ToString();
  labels["containerd.io/snapshot/cri.manifest-digest"] =
      image.resolved.manifest_descriptor.digest.ToString();
  labels["containerd.io/snapshot/cri.image-layers"] = LayersLabel(image, i);
  return labels;
}

absl::StatusOr<std::string> UnpackRootfs(const std::string& layout, const std::string& tag,
                                         const std::string& dir) {
  std::string bundle = dir + "/bundle";
  absl::Status s =
      Sh(absl::StrCat("umoci unpack --image ", layout, ":", tag, " ", bundle, " >/dev/null"));
  if (!s.ok()) return s;
  return bundle + "/rootfs";
}

std::vector<std::string> CompareTrees(const std::string& expected, const std::string& actual,
                                      const std::vector<std::string>& ignore) {
  std::vector<std::string> diffs;
  CompareRec(expected, actual, "", ignore, &diffs);
  return diffs;
}

}  // namespace lazypull::testing
