#include "mount/erofs/erofs_probe.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
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
#include "mount/erofs/loop_device.h"

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

// Mounts `image` + `data` at `mnt` as `attach` says and reads the probe file back.
absl::Status TryMount(const std::string& image, const std::string& data, const std::string& mnt,
                      const ErofsAttachment& attach) {
  absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
      KernelErofsMount::Mount(image, data, mnt, attach);
  if (!m.ok()) return m.status();
  std::ifstream in(mnt + "/probe", std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  absl::Status unmounted = (*m)->Unmount();
  if (got.str() != kProbeContent) {
    return absl::DataLossError("a test mount read back wrong bytes");
  }
  return unmounted;
}

// Whether an image can go beneath a mount of itself and replace it (graduation's switch).
absl::Status TryMountBeneath(const std::string& image, const std::string& data,
                             const std::string& mnt, const ErofsAttachment& attach) {
  absl::StatusOr<std::unique_ptr<KernelErofsMount>> top =
      KernelErofsMount::Mount(image, data, mnt, attach);
  if (!top.ok()) return top.status();
  absl::StatusOr<std::unique_ptr<KernelErofsMount>> beneath =
      KernelErofsMount::MountBeneath(image, data, mnt, attach);
  if (!beneath.ok()) return beneath.status();
  (*top)->Release();  // detached by MountBeneath
  return (*beneath)->Unmount();
}

// Writes a one-file image with `block_bits` blocks and its data file; returns {image, data}.
absl::StatusOr<std::pair<std::string, std::string>> WriteProbeImage(const std::string& dir,
                                                                    uint32_t block_bits) {
  absl::StatusOr<format::LayerIndex> index = ProbeIndex();
  if (!index.ok()) return index.status();
  absl::StatusOr<BlobLayout> layout = PlanBlobLayout(*index, block_bits);
  if (!layout.ok()) return layout.status();
  const std::string image = fmt::format("{}/probe{}.erofs", dir, block_bits);
  const std::string data = fmt::format("{}/data{}", dir, block_bits);
  if (absl::Status s = WriteErofsImage(*index, layout->device, {}, image); !s.ok()) return s;
  std::string blob(layout->size, '\0');
  std::memcpy(blob.data(), kProbeContent, sizeof(kProbeContent) - 1);
  if (absl::Status s = WriteAll(data, blob); !s.ok()) return s;
  return std::make_pair(image, data);
}

}  // namespace

nlohmann::json ErofsSupport::ToJson() const {
  nlohmann::json j = {{"erofs_attach", std::string(ErofsAttachName(attach))},
                      {"small_blocks", small_blocks},
                      {"mount_beneath", mount_beneath}};
  if (!file_backed_error.empty()) j["file_backed_error"] = file_backed_error;
  return j;
}

absl::StatusOr<ErofsSupport> ProbeErofs(const ErofsOptions& options) {
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
  const std::string mnt = templ + "/mnt";
  struct Cleanup {
    std::string dir, mnt;
    ~Cleanup() {
      // Nothing may stay mounted in a dir about to be deleted (a failed switch may stack).
      while (::umount2(mnt.c_str(), MNT_DETACH) == 0) {
      }
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{templ, mnt};
  absl::StatusOr<std::pair<std::string, std::string>> big = WriteProbeImage(templ, 12);
  if (!big.ok()) return big.status();
  absl::StatusOr<std::pair<std::string, std::string>> small = WriteProbeImage(templ, 9);
  if (!small.ok()) return small.status();
  ::mkdir(mnt.c_str(), 0700);

  ErofsSupport support;
  ErofsAttachment attach;
  attach.loop_owner = LoopOwnerTag(templ);
  absl::Status file_error = absl::OkStatus();
  bool found = false;
  if (options.attach != ErofsAttach::kLoop) {
    file_error = TryMount(big->first, big->second, mnt, attach);
    if (file_error.ok()) {
      support.attach = ErofsAttach::kFile;
      found = true;
    } else {
      support.file_backed_error = std::string(file_error.message());
    }
  }
  if (!found && options.attach != ErofsAttach::kFile) {
    attach.loop = true;
    absl::Status loop_error = TryMount(big->first, big->second, mnt, attach);
    if (!loop_error.ok()) {
      return Unavailable(file_error.ok()
                             ? fmt::format("a test mount through loop devices: {}",
                                           std::string(loop_error.message()))
                             : fmt::format("a file-backed test mount: {}; through loop devices: {}",
                                           std::string(file_error.message()),
                                           std::string(loop_error.message())));
    }
    support.attach = ErofsAttach::kLoop;
    found = true;
  }
  if (!found) {
    return Unavailable(
        fmt::format("a file-backed test mount: {}", std::string(file_error.message())));
  }
  support.small_blocks = TryMount(small->first, small->second, mnt, attach).ok();
  absl::Status beneath = TryMountBeneath(big->first, big->second, mnt, attach);
  support.mount_beneath = beneath.ok();
  return support;
}

}  // namespace lazypull::mount::erofs
