#include "mount/erofs/graduated_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/layer_decompressor.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/tar_payloads.h"
#include "mount/erofs/tar_rebuilder.h"
#include "nlohmann/json.hpp"

namespace lazypull::mount::erofs {
namespace {

namespace fs = std::filesystem;

constexpr char kTempPrefix[] = ".tmp-";
constexpr uint64_t kZeroBlock = 4096;

// A BlobSink writing a file in which every all-zero 4 KiB block stays a hole.
class SparseFileSink : public convert::BlobSink {
 public:
  // `cancel` (may be null) makes Append fail with Cancelled, so decompressing a huge layer
  // does not hold up a shutdown.
  static absl::StatusOr<std::unique_ptr<SparseFileSink>> Create(
      const std::string& path, const std::atomic<bool>* cancel = nullptr) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444));
    if (!fd.valid()) return absl::ErrnoToStatus(errno, fmt::format("create {}", path));
    auto sink = std::unique_ptr<SparseFileSink>(new SparseFileSink(path, std::move(fd)));
    sink->cancel_ = cancel;
    return sink;
  }

  absl::Status Append(std::string_view data) override {
    if (cancel_ != nullptr && cancel_->load()) return absl::CancelledError("graduation cancelled");
    sha_.Update(data);
    while (!data.empty()) {
      // Fill up to the next block boundary, then decide per whole block.
      const size_t take = std::min<size_t>(data.size(), kZeroBlock - pending_.size() % kZeroBlock);
      pending_.append(data.substr(0, take));
      data.remove_prefix(take);
      if (pending_.size() == kZeroBlock) {
        if (absl::Status s = FlushBlock(); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }
  uint64_t size() const override { return written_ + pending_.size(); }
  absl::StatusOr<Digest> Finish() override {
    if (!pending_.empty()) {
      if (absl::Status s = FlushBlock(); !s.ok()) return s;
    }
    if (::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0 || ::fsync(fd_.get()) != 0) {
      return absl::ErrnoToStatus(errno, fmt::format("finish {}", path_));
    }
    fd_.Reset();
    return sha_.Finish();
  }

 private:
  SparseFileSink(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  absl::Status FlushBlock() {
    const bool zero = std::all_of(pending_.begin(), pending_.end(), [](char c) { return c == 0; });
    if (!zero) {
      size_t done = 0;
      while (done < pending_.size()) {
        ssize_t n = ::pwrite(fd_.get(), pending_.data() + done, pending_.size() - done,
                             static_cast<off_t>(written_ + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return absl::ErrnoToStatus(errno, fmt::format("write {}", path_));
        done += static_cast<size_t>(n);
      }
    }
    written_ += pending_.size();
    pending_.clear();
    return absl::OkStatus();
  }

  std::string path_;
  UniqueFd fd_;
  Sha256 sha_;
  std::string pending_;
  uint64_t written_ = 0;
  const std::atomic<bool>* cancel_ = nullptr;
};

// Checks every chunk of `index` against the tar bytes at its payload offset: digests for data
// chunks, all zeros for holes. Returns how many chunks were checked.
absl::StatusOr<uint64_t> VerifyChunks(const format::LayerIndex& index,
                                      const std::vector<uint64_t>& payloads, BlobReader& tar) {
  uint64_t checked = 0;
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    if (payloads[ino - 1] == kNoPayload) continue;
    for (const format::Chunk& c : index.Chunks(ino)) {
      absl::StatusOr<std::string> bytes = tar.ReadAt(payloads[ino - 1] + c.file_offset, c.length);
      if (!bytes.ok()) return bytes.status();
      if (c.compression == format::ChunkCompression::kZeros) {
        if (!std::all_of(bytes->begin(), bytes->end(), [](char b) { return b == 0; })) {
          return absl::DataLossError(
              fmt::format("{}: the tar has data where the index has a hole at offset {}",
                          index.Path(ino), c.file_offset));
        }
      } else if (c.has_digest) {
        if (absl::Status s = c.digest_value().Verify(*bytes); !s.ok()) {
          return absl::DataLossError(fmt::format("{}: chunk at offset {} of the tar: {}",
                                                 index.Path(ino), c.file_offset,
                                                 std::string(s.message())));
        }
      }
      ++checked;
    }
  }
  return checked;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444));
  if (!fd.valid() ||
      ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("write {}", path));
  }
  return absl::OkStatus();
}

void SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.valid()) ::fsync(fd.get());
}

// The tar rebuilt from the layer's local chunks + its header frames (zstd:chunked).
absl::StatusOr<convert::DecompressedLayer> RebuildTar(LayerReader& reader, BlobReader& blob,
                                                      const std::string& tar_path,
                                                      const std::atomic<bool>& cancel,
                                                      GraduationStats* stats) {
  absl::StatusOr<std::unique_ptr<SparseFileSink>> sink = SparseFileSink::Create(tar_path, &cancel);
  if (!sink.ok()) return sink.status();
  absl::StatusOr<RebuildStats> rebuilt = RebuildZstdChunkedTar(reader, blob, **sink, cancel);
  if (!rebuilt.ok()) return rebuilt.status();
  convert::DecompressedLayer out;
  out.size = (*sink)->size();
  absl::StatusOr<Digest> digest = (*sink)->Finish();
  if (!digest.ok()) return digest.status();
  out.diff_id = *digest;
  stats->method = "rebuilt";
  stats->compressed_bytes = rebuilt->fetched_bytes;
  return out;
}

// The tar decompressed from a fresh download of the whole compressed layer.
absl::StatusOr<convert::DecompressedLayer> DownloadTar(
    const std::string& layer_id, const LayerOrigin& origin, const std::string& tmp,
    const std::string& tar_path, const std::atomic<bool>& cancel, GraduationStats* stats) {
  const std::string blob_path = tmp + "/layer.blob";
  if (absl::Status s = origin.fetch_blob(blob_path, [&cancel] { return cancel.load(); }); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> blob = NewFileBlobReader(blob_path);
  if (!blob.ok()) return blob.status();
  stats->method = "downloaded";
  stats->compressed_bytes = (*blob)->Size();
  absl::StatusOr<convert::InputCompression> compression = convert::SniffCompression(**blob);
  if (!compression.ok()) return compression.status();
  absl::StatusOr<std::unique_ptr<SparseFileSink>> sink = SparseFileSink::Create(tar_path, &cancel);
  if (!sink.ok()) return sink.status();
  absl::StatusOr<convert::DecompressedLayer> tar =
      convert::DecompressLayer(**blob, *compression, **sink, layer_id);
  blob->reset();
  ::unlink(blob_path.c_str());
  return tar;
}

}  // namespace

GraduatedStore::GraduatedStore(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().filename().string().rfind(kTempPrefix, 0) == 0) {
      fs::remove_all(entry.path(), ec);
      LogInfo("removed an unfinished graduation", {{"path", entry.path().string()}});
    }
  }
}

std::string GraduatedStore::LayerDir(const std::string& layer_id) const {
  std::string name;
  for (char c : layer_id) name.push_back(c == ':' || c == '/' ? '-' : c);
  return dir_ + "/" + name;
}

std::optional<GraduatedLayer> GraduatedStore::Find(const std::string& layer_id) const {
  GraduatedLayer g;
  g.dir = LayerDir(layer_id);
  g.image = g.dir + "/meta.erofs";
  g.tar = g.dir + "/layer.tar";
  struct stat st;
  if (::stat(g.image.c_str(), &st) != 0 || ::stat(g.tar.c_str(), &st) != 0) return std::nullopt;
  return g;
}

absl::StatusOr<GraduationStats> GraduatedStore::Graduate(const std::string& layer_id,
                                                         LayerReader& reader,
                                                         const LayerOrigin& origin,
                                                         const std::atomic<bool>& cancel) {
  const format::LayerIndex& index = reader.index();
  if (!origin.valid()) {
    return absl::FailedPreconditionError(
        fmt::format("layer {}: no origin to build a local copy from", layer_id));
  }
  const absl::Time start = absl::Now();
  GraduationStats stats;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  const std::string final_dir = LayerDir(layer_id);
  const std::string tmp = fmt::format("{}/{}{}-{}", dir_, kTempPrefix,
                                      fs::path(final_dir).filename().string(), ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::InternalError(fmt::format("create {}: {}", tmp, ec.message()));
  }
  // Whatever fails below, nothing half-built stays.
  struct Cleanup {
    std::string dir;
    bool keep = false;
    ~Cleanup() {
      std::error_code e;
      if (!keep) fs::remove_all(dir, e);
    }
  } cleanup{tmp};

  absl::StatusOr<Digest> diff_id = origin.diff_id();
  if (!diff_id.ok()) return diff_id.status();
  const std::string tar_path = tmp + "/layer.tar";
  absl::StatusOr<convert::DecompressedLayer> tar =
      absl::FailedPreconditionError("not zstd:chunked");
  if (origin.blob != nullptr && index.format() == format::LayerFormat::kZstdChunked) {
    tar = RebuildTar(reader, *origin.blob, tar_path, cancel, &stats);
    if (tar.ok() && tar->diff_id != *diff_id) {
      tar = absl::DataLossError(fmt::format("the rebuilt tar hashes to {}, not {}",
                                            tar->diff_id.ToString(), diff_id->ToString()));
    }
    if (!tar.ok()) {
      if (cancel) return absl::CancelledError("graduation cancelled");
      LogWarn("cannot rebuild the layer's tar from its chunks; downloading it",
              {{"layer", layer_id}, {"error", tar.status().ToString()}});
    }
  }
  if (!tar.ok()) {
    tar = DownloadTar(layer_id, origin, tmp, tar_path, cancel, &stats);
    if (!tar.ok()) return tar.status();
    if (tar->diff_id != *diff_id) {
      return absl::DataLossError(
          fmt::format("layer {}: the uncompressed layer hashes to {}, the image config says {}",
                      layer_id, tar->diff_id.ToString(), diff_id->ToString()));
    }
  }
  stats.tar_bytes = tar->size;

  absl::StatusOr<std::unique_ptr<BlobReader>> tar_reader = NewFileBlobReader(tar_path);
  if (!tar_reader.ok()) return tar_reader.status();
  absl::StatusOr<tar::TarIndex> scanned = tar::ScanTar(**tar_reader);
  if (!scanned.ok()) return scanned.status();
  absl::StatusOr<std::vector<uint64_t>> payloads = MatchTarPayloads(index, *scanned);
  if (!payloads.ok()) return payloads.status();
  absl::StatusOr<uint64_t> verified = VerifyChunks(index, *payloads, **tar_reader);
  if (!verified.ok()) return verified.status();
  stats.chunks_verified = *verified;
  absl::StatusOr<DeviceLayout> device = PlanTarLayout(index, *payloads, tar->size);
  if (!device.ok()) return device.status();
  ImageOptions image_options;
  image_options.device_tag = final_dir + "/layer.tar";
  if (absl::Status s = WriteErofsImage(index, *device, image_options, tmp + "/meta.erofs");
      !s.ok()) {
    return s;
  }
  stats.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  nlohmann::json info = {
      {"layer", layer_id},
      {"method", stats.method},
      {"diff_id", diff_id->ToString()},
      {"tar_bytes", stats.tar_bytes},
      {"compressed_bytes", stats.compressed_bytes},
      {"chunks_verified", stats.chunks_verified},
      {"inodes", index.inode_count()},
      {"graduated_at", absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone())}};
  if (absl::Status s = WriteText(tmp + "/info.json", info.dump(2) + "\n"); !s.ok()) return s;
  SyncDir(tmp);
  fs::remove_all(final_dir, ec);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("rename {} to {}", tmp, final_dir));
  }
  cleanup.keep = true;
  SyncDir(dir_);
  return stats;
}

absl::Status GraduatedStore::Remove(const std::string& layer_id) {
  std::error_code ec;
  fs::remove_all(LayerDir(layer_id), ec);
  if (ec)
    return absl::InternalError(fmt::format("remove {}: {}", LayerDir(layer_id), ec.message()));
  return absl::OkStatus();
}

}  // namespace lazypull::mount::erofs
