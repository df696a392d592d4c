#include "tools/optimize/layer_unpacker.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "base/unique_fd.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/layer_decompressor.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "tools/optimize/child_process.h"

namespace lazypull::optimize {
namespace {

constexpr char kWhiteoutPrefix[] = ".wh.";
constexpr char kWhiteoutMetaPrefix[] = ".wh..wh.";
constexpr char kOpaqueWhiteout[] = ".wh..wh..opq";

// Opens the directory `rel` (clean, relative; "" = root) below `root`, following no symlink
// and never leaving `root`; creates missing directories 0755 on the way.
absl::StatusOr<UniqueFd> OpenDirBeneath(int root, const std::string& rel) {
  UniqueFd dir(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!dir.valid()) return absl::InternalError(fmt::format("dup: {}", strerror(errno)));
  size_t start = 0;
  while (start < rel.size()) {
    size_t slash = rel.find('/', start);
    std::string name = rel.substr(start, slash == std::string::npos ? slash : slash - start);
    start = slash == std::string::npos ? rel.size() : slash + 1;
    struct open_how how = {};
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    int fd = static_cast<int>(syscall(SYS_openat2, dir.get(), name.c_str(), &how, sizeof(how)));
    if (fd < 0 && errno == ENOENT) {
      if (::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
        return absl::InternalError(fmt::format("mkdir {}: {}", rel, strerror(errno)));
      }
      fd = static_cast<int>(syscall(SYS_openat2, dir.get(), name.c_str(), &how, sizeof(how)));
    }
    if (fd < 0) {
      if (errno == ELOOP || errno == ENOTDIR || errno == EXDEV) {
        return absl::InvalidArgumentError(
            fmt::format("whiteout under {}: a path component is not a directory of the layer "
                        "({})",
                        rel, strerror(errno)));
      }
      return absl::InternalError(fmt::format("open {}: {}", rel, strerror(errno)));
    }
    dir.Reset(fd);
  }
  return dir;
}

absl::Status ApplyWhiteout(int root, const std::string& clean_name, const std::string& what) {
  size_t slash = clean_name.rfind('/');
  std::string parent = slash == std::string::npos ? "" : clean_name.substr(0, slash);
  std::string base = slash == std::string::npos ? clean_name : clean_name.substr(slash + 1);
  auto dir = OpenDirBeneath(root, parent);
  if (!dir.ok()) {
    return absl::Status(dir.status().code(),
                        fmt::format("layer {}: {}", what, std::string(dir.status().message())));
  }
  if (base == kOpaqueWhiteout) {
    if (::fsetxattr(dir->get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
      return absl::InternalError(fmt::format("layer {}: opaque directory /{}: setxattr: {}", what,
                                             parent, strerror(errno)));
    }
    return absl::OkStatus();
  }
  if (absl::StartsWith(base, kWhiteoutMetaPrefix)) return absl::OkStatus();  // aufs metadata
  std::string hidden = base.substr(strlen(kWhiteoutPrefix));
  if (hidden.empty() || hidden == "." || hidden == "..") {
    return absl::InvalidArgumentError(
        fmt::format("layer {}: malformed whiteout {}", what, clean_name));
  }
  // A name the layer itself holds stays (OCI: whiteouts only hide lower layers' files).
  if (::mknodat(dir->get(), hidden.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0 && errno != EEXIST) {
    return absl::InternalError(
        fmt::format("layer {}: whiteout {}: mknod: {}", what, clean_name, strerror(errno)));
  }
  return absl::OkStatus();
}

void RemoveQuietly(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace

absl::StatusOr<UnpackedLayer> UnpackLayer(BlobReader& blob, const std::string& dir,
                                          const std::string& what, const UnpackOptions& options) {
  const std::string tar_path = options.scratch_prefix + ".tar";
  const std::string log_path = options.scratch_prefix + ".log";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      RemoveQuietly(a);
      RemoveQuietly(b);
    }
  } cleanup{tar_path, log_path};

  auto compression = convert::SniffCompression(blob);
  if (!compression.ok()) return compression.status();
  auto sink = convert::NewFileBlobSink(tar_path);
  if (!sink.ok()) return sink.status();
  auto plain = convert::DecompressLayer(blob, *compression, **sink, what);
  if (!plain.ok()) return plain.status();
  UnpackedLayer out;
  out.diff_id = plain->diff_id;
  if (options.expected_diff_id && *options.expected_diff_id != out.diff_id) {
    return absl::DataLossError(fmt::format("layer {} uncompresses to {} but the config says {}",
                                           what, out.diff_id.ToString(),
                                           options.expected_diff_id->ToString()));
  }
  auto tar_reader = NewFileBlobReader(tar_path);
  if (!tar_reader.ok()) return tar_reader.status();
  auto index = tar::ScanTar(**tar_reader);
  if (!index.ok()) {
    return absl::Status(index.status().code(),
                        fmt::format("layer {}: {}", what, std::string(index.status().message())));
  }
  tar_reader->reset();

  absl::Status st =
      RunProgram({"tar", "-x", "-f", tar_path, "-C", dir, "--numeric-owner", "--same-owner",
                  "--same-permissions", "--xattrs", "--xattrs-include=*",
                  "--delay-directory-restore", "--exclude=.wh.*"},
                 log_path, options.tar_timeout);
  if (!st.ok()) {
    return absl::Status(st.code(),
                        fmt::format("extracting layer {}: {}", what, std::string(st.message())));
  }

  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return absl::InternalError(fmt::format("open {}: {}", dir, strerror(errno)));
  std::map<std::string, tar::EntryType> last;
  for (const tar::TarEntry& e : index->entries) {
    if (e.type == tar::EntryType::kGlobalHeader) continue;
    std::string clean = tar::CleanEntryName(e.name);
    if (clean.empty()) continue;
    size_t slash = clean.rfind('/');
    if (absl::StartsWith(slash == std::string::npos ? clean : clean.substr(slash + 1),
                         kWhiteoutPrefix)) {
      if (auto s = ApplyWhiteout(root.get(), clean, what); !s.ok()) return s;
      continue;
    }
    last[clean] = e.type;
  }
  for (const auto& [name, type] : last) {
    if (type == tar::EntryType::kRegular || type == tar::EntryType::kHardlink) {
      out.regular_files.insert(name);
    }
  }
  return out;
}

}  // namespace lazypull::optimize
