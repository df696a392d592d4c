#include "mount/erofs/erofs_probe.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/unique_fd.h"
#include "fetcher/format/layer_index_builder.h"
#include "fmt/format.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/kernel_mount.h"

namespace lazypull::mount::erofs {
namespace {

constexpr char kProbeContent[] = "lazypull erofs probe\n";

absl::Status Unavailable(const std::string& why) {
  return absl::FailedPreconditionError(fmt::format("EROFS is not usable here: {}", why));
}

absl::Status WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) return absl::InternalError(fmt::format("write {}", path));
  return absl::OkStatus();
}

// One directory holding one file whose single chunk is the data device's first block.
absl::StatusOr<format::LayerIndex> ProbeIndex() {
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  format::Chunk c;
  c.length = sizeof(kProbeContent) - 1;
  c.compressed_length = 1;
  c.compression = format::ChunkCompression::kZstdFrame;
  c.has_digest = true;
  if (absl::Status s = b.AddRegular("probe", meta, c.length, {c}); !s.ok()) return s;
  return b.Finish(Digest(), 2, 1);
}

}  // namespace

absl::Status ProbeErofs(const ErofsOptions& options) {
  std::ifstream fs_list(options.probe_filesystems);
  std::stringstream text;
  text << fs_list.rdbuf();
  bool listed = false;
  std::string line;
  while (std::getline(text, line)) {
    if (line.size() >= 5 && line.compare(line.size() - 5, 5, "erofs") == 0 &&
        (line.size() == 5 || line[line.size() - 6] == '\t' || line[line.size() - 6] == ' ')) {
      listed = true;
    }
  }
  if (!listed) return Unavailable(fmt::format("no erofs in {}", options.probe_filesystems));
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return Unavailable(fmt::format("/dev/fuse: {}", strerror(errno)));
  }
  const char* tmpdir = getenv("TMPDIR");
  std::string templ = fmt::format("{}/lazypull-erofs-probe-XXXXXX", tmpdir ? tmpdir : "/tmp");
  if (::mkdtemp(templ.data()) == nullptr) {
    return Unavailable(fmt::format("mkdtemp {}: {}", templ, strerror(errno)));
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{templ};
  absl::StatusOr<format::LayerIndex> index = ProbeIndex();
  if (!index.ok()) return index.status();
  absl::StatusOr<BlobLayout> layout = PlanBlobLayout(*index, 12);
  if (!layout.ok()) return layout.status();
  const std::string image = templ + "/probe.erofs", data = templ + "/data", mnt = templ + "/mnt";
  if (absl::Status s = WriteErofsImage(*index, layout->device, {}, image); !s.ok()) return s;
  std::string blob(layout->size, '\0');
  std::memcpy(blob.data(), kProbeContent, sizeof(kProbeContent) - 1);
  if (absl::Status s = WriteAll(data, blob); !s.ok()) return s;
  ::mkdir(mnt.c_str(), 0700);
  absl::StatusOr<std::unique_ptr<KernelErofsMount>> m = KernelErofsMount::Mount(image, data, mnt);
  if (!m.ok()) return Unavailable(std::string(m.status().message()));
  std::ifstream in(mnt + "/probe", std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  absl::Status unmounted = (*m)->Unmount();
  if (got.str() != kProbeContent) {
    return Unavailable("a test mount of a file-backed image read back wrong bytes");
  }
  if (!unmounted.ok()) return Unavailable(std::string(unmounted.message()));
  return absl::OkStatus();
}

}  // namespace lazypull::mount::erofs
