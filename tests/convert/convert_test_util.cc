#include "tests/convert/convert_test_util.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <filesystem>

#include "absl/status/status.h"
#include "fetcher/format/chunk_decoder.h"
#include "fmt/format.h"
#include "lazypull/digest.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace fs = std::filesystem;

std::string Describe(const FileInfo& f) {
  std::string x;
  for (const auto& [k, v] : f.xattrs) x += k + "=" + v + ";";
  return fmt::format(
      "mode={:o} uid={} gid={} size={} mtime={} dev={}:{} link={} xattrs={} "
      "sha={} group={}",
      f.mode, f.uid, f.gid, f.size, f.mtime_sec, f.dev_major, f.dev_minor, f.link_target, x,
      f.content_sha256.substr(0, 12), f.hardlink_group);
}

absl::StatusOr<TreeSnapshot> SnapshotDir(const std::string& dir,
                                         const std::set<std::string>& skip) {
  TreeSnapshot snap;
  std::map<std::pair<dev_t, ino_t>, std::string> first_name;
  std::vector<std::string> paths;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    paths.push_back(it->path().lexically_relative(dir).string());
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& rel : paths) {
    if (skip.count(rel)) continue;
    std::string full = dir + "/" + rel;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) return absl::InternalError("lstat " + full);
    FileInfo f;
    f.mode = st.st_mode;
    f.uid = st.st_uid;
    f.gid = st.st_gid;
    f.mtime_sec = st.st_mtim.tv_sec;
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      f.dev_major = major(st.st_rdev);
      f.dev_minor = minor(st.st_rdev);
    }
    if (S_ISLNK(st.st_mode)) {
      f.link_target = fs::read_symlink(full).string();
      f.size = f.link_target.size();
    }
    if (S_ISREG(st.st_mode)) {
      f.size = st.st_size;
      auto data = ReadFile(full);
      if (!data.ok()) return data.status();
      f.content_sha256 = Digest::Of(*data).hex();
      auto [it, inserted] = first_name.insert({{st.st_dev, st.st_ino}, rel});
      f.hardlink_group = it->second;
    }
    char names[65536];
    ssize_t n = llistxattr(full.c_str(), names, sizeof(names));
    for (ssize_t i = 0; i < n;) {
      std::string name(names + i);
      i += name.size() + 1;
      char value[65536];
      ssize_t vn = lgetxattr(full.c_str(), name.c_str(), value, sizeof(value));
      if (vn >= 0) f.xattrs[name] = std::string(value, vn);
    }
    snap[rel] = f;
  }
  return snap;
}

absl::StatusOr<TreeSnapshot> SnapshotIndex(const format::LayerIndex& index, BlobReader& blob) {
  TreeSnapshot snap;
  std::map<format::Ino, std::string> first_name;
  std::vector<format::Ino> stack{format::kRootIno};
  std::vector<std::pair<std::string, format::Ino>> all;
  while (!stack.empty()) {
    format::Ino dir = stack.back();
    stack.pop_back();
    for (size_t i = 0; i < index.ChildCount(dir); ++i) {
      format::DirEntry e = index.Child(dir, i);
      std::string parent = dir == format::kRootIno ? "" : index.Path(dir) + "/";
      // Path() gives the first name; for hardlinks build the name from the parent.
      all.push_back({parent + std::string(e.name), e.ino});
      auto attr = index.GetAttr(e.ino);
      if (attr && S_ISDIR(attr->mode)) stack.push_back(e.ino);
    }
  }
  std::sort(all.begin(), all.end());
  for (const auto& [path, ino] : all) {
    auto a = index.GetAttr(ino);
    if (!a) return absl::InternalError("bad inode for " + path);
    FileInfo f;
    f.mode = a->mode;
    f.uid = a->uid;
    f.gid = a->gid;
    f.mtime_sec = a->mtime_sec;
    f.dev_major = a->dev_major;
    f.dev_minor = a->dev_minor;
    if (S_ISLNK(a->mode)) {
      f.link_target = std::string(index.SymlinkTarget(ino));
      f.size = f.link_target.size();
    }
    if (S_ISREG(a->mode)) {
      f.size = a->size;
      Sha256 sha;
      uint64_t expect = 0;
      for (const format::Chunk& c : index.Chunks(ino)) {
        if (c.file_offset != expect) return absl::InternalError("chunk gap in " + path);
        std::string compressed;
        if (c.compression != format::ChunkCompression::kZeros) {
          auto raw = blob.ReadAt(c.compressed_offset, c.compressed_length);
          if (!raw.ok()) return raw.status();
          compressed = std::move(*raw);
        }
        auto data = format::DecodeChunk(c, compressed);
        if (!data.ok()) {
          return absl::Status(data.status().code(),
                              path + ": " + std::string(data.status().message()));
        }
        sha.Update(*data);
        expect += data->size();
      }
      if (expect != a->size) return absl::InternalError("chunks do not cover " + path);
      f.content_sha256 = sha.Finish().hex();
      auto [it, inserted] = first_name.insert({ino, path});
      f.hardlink_group = it->second;
    }
    for (const auto& [k, v] : index.Xattrs(ino)) f.xattrs[std::string(k)] = std::string(v);
    snap[path] = f;
  }
  return snap;
}

absl::Status MakeSourceTree(const std::string& dir) {
  std::string script = fmt::format(R"SH(
set -e
D='{0}'
mkdir -p "$D/usr/lib" "$D/usr/share" "$D/special/sub dir" "$D/dev" "$D/empty-dir"
cp -a /usr/lib/python3.11 "$D/usr/lib/"
cp -a /usr/share/zoneinfo "$D/usr/share/"
for i in $(seq 1 30); do mkdir -p "$D/gen/d$i"; for j in $(seq 1 50); do echo "file $i $j" > "$D/gen/d$i/f$j"; done; done
cd "$D/special"
printf 'hello\n' > small.txt
: > empty
head -c 9437184 /dev/urandom > big.bin
truncate -s 16M sparse.img
printf 'island-one' | dd of=sparse.img bs=1 seek=4096 conv=notrunc 2>/dev/null
printf 'island-two' | dd of=sparse.img bs=1 seek=12582912 conv=notrunc 2>/dev/null
head -c 2000000 /dev/zero > zeros.bin
printf 'x' >> zeros.bin
cp small.txt setuid && chmod 4755 setuid
mkdir sticky && chmod 1777 sticky
cp small.txt owned && chown 1234:5678 owned
ln -s small.txt rel-link
ln -s /etc/does/not/exist abs-link
ln small.txt hard1
ln small.txt "sub dir/hard2"
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 200
printf 'spaces' > "sub dir/file with spaces.txt"
printf 'utf8' > "sub dir/ünïcødé 文件 ✓.txt"
L=$(printf 'l%.0s' $(seq 1 150))
printf 'long name' > "sub dir/$L"
P="deep/$(printf 'd%.0s' $(seq 1 60))/$(printf 'e%.0s' $(seq 1 60))/$(printf 'f%.0s' $(seq 1 60))/$(printf 'g%.0s' $(seq 1 60))"
mkdir -p "$P" && printf 'deep' > "$P/file.txt"
python3 -c "import os; os.setxattr('small.txt', 'user.greeting', b'hi there'); os.setxattr('big.bin', 'user.bin', bytes(range(256))); os.setxattr('sub dir', 'user.dir', b'd'); os.setxattr('owned', 'trusted.secret', b'\x00\x01')"
find "$D" -exec touch -h -d @1600000000 {{}} +
touch -h -d @1700000123 small.txt rel-link
touch -d @1500000000 big.bin
)SH",
                                   dir);
  auto r = RunCommand({"/bin/bash", "-c", script}, std::chrono::seconds(300));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("make source tree: " + r->output);
  return absl::OkStatus();
}

absl::Status MakeTar(const std::string& dir, const std::string& out, const std::string& format) {
  auto r = RunCommand({"tar", "--format=" + format, "--xattrs", "--xattrs-include=*",
                       "--numeric-owner", "-C", dir, "-cf", out, "."});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("tar: " + r->output);
  return absl::OkStatus();
}

absl::StatusOr<std::string> BuildEstargzRef(const std::string& dir) {
  std::string bin = dir + "/estargz_ref";
  if (fs::exists(bin)) return bin;
  auto r =
      RunCommand({"go", "build", "-o", bin, SourceDir() + "/tests/convert/estargz_ref/main.go"},
                 std::chrono::seconds(600),
                 {{"GO111MODULE", "off"},
                  {"GOPATH", dir + "/gopath:/usr/share/gocode"},
                  {"GOCACHE", dir + "/gocache"}});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("go build estargz_ref: " + r->output);
  return bin;
}

std::string DiffSnapshots(const TreeSnapshot& want, const TreeSnapshot& got, bool seconds_only) {
  std::string out;
  int n = 0;
  for (const auto& [path, w] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      if (n++ < 20) out += "missing: " + path + "\n";
      continue;
    }
    FileInfo g = it->second;
    FileInfo ww = w;
    if (S_ISDIR(ww.mode)) {
      ww.size = g.size = 0;
    }
    if (!(ww == g) && n++ < 20) {
      out += fmt::format("differs: {}\n  want {}\n  got  {}\n", path, Describe(ww), Describe(g));
    }
  }
  for (const auto& [path, g] : got) {
    if (!want.count(path) && n++ < 20) out += "unexpected: " + path + "\n";
  }
  return out;
}

}  // namespace lazypull::testing
