#include "mount/erofs/graduated_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/format/gzip_spans.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/soci_tar.h"
#include "mount/erofs/sparse_file_sink.h"
#include "mount/erofs/tar_payloads.h"
#include "mount/erofs/tar_rebuilder.h"
#include "nlohmann/json.hpp"

namespace lazypull::mount::erofs {
namespace {

namespace fs = std::filesystem;

constexpr char kTempPrefix[] = ".tmp-";
constexpr char kFailuresPrefix[] = ".failures-";
constexpr char kImage[] = "meta.erofs";
constexpr char kBlob[] = "layer.blob";
constexpr char kTar[] = "layer.tar";

absl::Status WriteSmallFile(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, fmt::format("create {}", path));
  for (size_t done = 0; done < text.size();) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::ErrnoToStatus(errno, fmt::format("write {}", path));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return absl::ErrnoToStatus(errno, fmt::format("fsync {}", path));
  return absl::OkStatus();
}

void SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.valid()) ::fsync(fd.get());
}

absl::Status MakeDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, fmt::format("create {}", dir));
  }
  // An existing directory (older daemon, other umask) is made root-only too.
  if (::chmod(dir.c_str(), 0700) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("chmod {}", dir));
  }
  return absl::OkStatus();
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

uint64_t HoleBytes(const format::LayerIndex& index) {
  uint64_t holes = 0;
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    for (const format::Chunk& c : index.Chunks(ino)) {
      if (c.compression == format::ChunkCompression::kZeros) holes += c.length;
    }
  }
  return holes;
}

// The layer's files in the lazy blob layout, read through `reader` in bounded pieces.
absl::Status WriteBlobCopy(LayerReader& reader, const std::string& tmp,
                           const std::string& final_dir, const std::atomic<bool>& cancel,
                           GraduationStats& stats) {
  const format::LayerIndex& index = reader.index();
  absl::StatusOr<BlobLayout> layout = PlanBlobLayout(index, 12);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<std::unique_ptr<SparseFileSink>> sink =
      SparseFileSink::Create(tmp + "/" + kBlob, {.hash = false, .cancel = &cancel});
  if (!sink.ok()) return sink.status();
  std::vector<char> buf(kGraduationPieceBytes);
  for (const BlobExtent& e : layout->extents) {
    if (absl::Status s = (*sink)->AppendZeros(e.offset - (*sink)->size()); !s.ok()) return s;
    for (uint64_t done = 0; done < e.length;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), e.length - done));
      const uint64_t file_offset = e.file_offset + done;
      if (IsHoleRange(index, e.ino, file_offset, want)) {
        if (absl::Status s = (*sink)->AppendZeros(want); !s.ok()) return s;
      } else {
        absl::StatusOr<size_t> n = reader.Read(e.ino, file_offset, buf.data(), want);
        if (!n.ok()) return n.status();
        if (*n != want) {
          return absl::DataLossError(fmt::format("{}: ended {} bytes early at offset {}",
                                                 index.Path(e.ino), want - *n, file_offset));
        }
        if (absl::Status s = (*sink)->Append(std::string_view(buf.data(), want)); !s.ok()) {
          return s;
        }
      }
      done += want;
    }
  }
  if (absl::Status s = (*sink)->AppendZeros(layout->size - (*sink)->size()); !s.ok()) return s;
  stats.data_bytes = (*sink)->size();
  if (absl::StatusOr<Digest> d = (*sink)->Finish(); !d.ok()) return d.status();
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    for (const format::Chunk& c : index.Chunks(ino)) {
      if (c.compression != format::ChunkCompression::kZeros) ++stats.chunks_verified;
    }
  }
  ImageOptions image_options;
  image_options.device_tag = final_dir + "/" + kBlob;
  return WriteErofsImage(index, layout->device, image_options, tmp + "/" + kImage);
}

// Checks every chunk of `index` against the tar bytes at its payload offset, in bounded
// pieces: digests for data chunks, all zeros for holes. Returns how many chunks were checked.
absl::StatusOr<uint64_t> VerifyChunks(const format::LayerIndex& index,
                                      const std::vector<uint64_t>& payloads, BlobReader& tar,
                                      const std::atomic<bool>& cancel) {
  uint64_t checked = 0;
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    if (payloads[ino - 1] == kNoPayload) continue;
    for (const format::Chunk& c : index.Chunks(ino)) {
      const bool zeros = c.compression == format::ChunkCompression::kZeros;
      Sha256 sha;
      for (uint64_t done = 0; done < c.length;) {
        if (cancel) return absl::CancelledError("graduation cancelled");
        const uint64_t want = std::min<uint64_t>(kGraduationPieceBytes, c.length - done);
        absl::StatusOr<std::string> bytes =
            tar.ReadAt(payloads[ino - 1] + c.file_offset + done, want);
        if (!bytes.ok()) return bytes.status();
        if (bytes->size() != want) return absl::DataLossError("short read of the tar");
        if (zeros && bytes->find_first_not_of('\0') != std::string::npos) {
          return absl::DataLossError(
              fmt::format("{}: the tar has data where the index has a hole at offset {}",
                          index.Path(ino), c.file_offset));
        }
        if (!zeros) sha.Update(*bytes);
        done += want;
      }
      if (!zeros && c.has_digest && sha.Finish() != c.digest_value()) {
        return absl::DataLossError(
            fmt::format("{}: the chunk at offset {} of the tar does not "
                        "match its digest",
                        index.Path(ino), c.file_offset));
      }
      ++checked;
    }
  }
  return checked;
}

// The EROFS image of a layer's tar copy (files at `payloads`, the tar `data_bytes` long) in
// `tmp`, naming the tar where it will be published (`final_dir`); `payloads` then go to
// `payloads_out`.
absl::Status WriteTarImage(const format::LayerIndex& index, std::vector<uint64_t> payloads,
                           uint64_t data_bytes, const std::string& tmp,
                           const std::string& final_dir, std::vector<uint64_t>& payloads_out) {
  absl::StatusOr<DeviceLayout> device = PlanTarLayout(index, payloads, data_bytes);
  if (!device.ok()) return device.status();
  ImageOptions image_options;
  image_options.device_tag = final_dir + "/" + kTar;
  if (absl::Status s = WriteErofsImage(index, *device, image_options, tmp + "/" + kImage);
      !s.ok()) {
    return s;
  }
  payloads_out = std::move(payloads);
  return absl::OkStatus();
}

// The original tar of a zstd:chunked layer rebuilt from its local chunks, checked against the
// diff_id and every chunk digest, with its image.
absl::Status WriteTarCopy(LayerReader& reader, BlobReader& blob, const Digest& diff_id,
                          const std::string& tmp, const std::string& final_dir,
                          const std::atomic<bool>& cancel, GraduationStats& stats,
                          std::vector<uint64_t>& payloads_out) {
  const format::LayerIndex& index = reader.index();
  const std::string tar_path = tmp + "/" + kTar;
  absl::StatusOr<std::unique_ptr<SparseFileSink>> sink =
      SparseFileSink::Create(tar_path, {.hash = true, .cancel = &cancel});
  if (!sink.ok()) return sink.status();
  absl::StatusOr<RebuildStats> rebuilt = RebuildZstdChunkedTar(reader, blob, **sink, cancel);
  if (!rebuilt.ok()) return rebuilt.status();
  stats.fetched_bytes = rebuilt->fetched_bytes;
  stats.data_bytes = (*sink)->size();
  absl::StatusOr<Digest> digest = (*sink)->Finish();
  if (!digest.ok()) return digest.status();
  if (*digest != diff_id) {
    return absl::DataLossError(fmt::format("the rebuilt tar hashes to {}, not to the diff_id {}",
                                           digest->ToString(), diff_id.ToString()));
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> tar_reader = NewFileBlobReader(tar_path);
  if (!tar_reader.ok()) return tar_reader.status();
  absl::StatusOr<tar::TarIndex> scanned = tar::ScanTar(**tar_reader);
  if (!scanned.ok()) return scanned.status();
  absl::StatusOr<std::vector<uint64_t>> payloads = MatchTarPayloads(index, *scanned);
  if (!payloads.ok()) return payloads.status();
  absl::StatusOr<uint64_t> verified = VerifyChunks(index, *payloads, **tar_reader, cancel);
  if (!verified.ok()) return verified.status();
  stats.chunks_verified = *verified;
  return WriteTarImage(index, std::move(*payloads), stats.data_bytes, tmp, final_dir, payloads_out);
}

// The original tar of a SOCI layer inflated from its verified spans (soci_tar.h), accepted only
// if it hashes to the diff_id and its files sit where the zTOC says (where the lazy mount read
// them), with its image.
absl::Status WriteSociTarCopy(const format::LayerIndex& index, const LayerOrigin& origin,
                              const Digest& diff_id, const std::string& tmp,
                              const std::string& final_dir, const std::atomic<bool>& cancel,
                              GraduationStats& stats, std::vector<uint64_t>& payloads_out) {
  absl::StatusOr<std::vector<uint64_t>> ztoc_payloads = SociTarPayloads(index);
  if (!ztoc_payloads.ok()) return ztoc_payloads.status();
  const std::string tar_path = tmp + "/" + kTar;
  absl::StatusOr<std::unique_ptr<SparseFileSink>> sink =
      SparseFileSink::Create(tar_path, {.hash = true, .cancel = &cancel});
  if (!sink.ok()) return sink.status();
  absl::StatusOr<SociTar> tar =
      InflateSociTar(index, origin.cache, *origin.blob, **sink, tmp + "/span.spool", cancel);
  if (!tar.ok()) return tar.status();
  stats.fetched_bytes = tar->fetched_bytes;
  stats.data_bytes = tar->size;
  stats.chunks_verified = tar->spans_verified;
  if (tar->digest != diff_id) {
    return absl::DataLossError(
        fmt::format("the layer's tar, inflated from its verified spans, hashes to {}, not to the "
                    "image config's diff_id {}",
                    tar->digest.ToString(), diff_id.ToString()));
  }
  // A lazy mount switched to the copy reads it in its own (tar) layout, up to the zTOC's size.
  const uint64_t declared = (format::GzipSpansOf(index)->uncompressed_size() + 511) / 512 * 512;
  if (tar->size < declared) {
    return absl::DataLossError(
        fmt::format("the layer's tar has {} bytes, its zTOC declares {}", tar->size, declared));
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> tar_reader = NewFileBlobReader(tar_path);
  if (!tar_reader.ok()) return tar_reader.status();
  absl::StatusOr<tar::TarIndex> scanned = tar::ScanTar(**tar_reader);
  if (!scanned.ok()) return scanned.status();
  absl::StatusOr<std::vector<uint64_t>> payloads = MatchTarPayloads(index, *scanned);
  if (!payloads.ok()) return payloads.status();
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    if ((*payloads)[ino - 1] != (*ztoc_payloads)[ino - 1]) {
      return absl::DataLossError(fmt::format("file {} starts at {} in the tar, the zTOC says {}",
                                             index.Path(ino), (*payloads)[ino - 1],
                                             (*ztoc_payloads)[ino - 1]));
    }
  }
  return WriteTarImage(index, std::move(*payloads), stats.data_bytes, tmp, final_dir, payloads_out);
}

}  // namespace

GraduatedStore::PendingCopy::~PendingCopy() {
  std::error_code ec;
  if (!published_ && !tmp_.empty()) fs::remove_all(tmp_, ec);
}

GraduatedStore::GraduatedStore(std::string dir, bool tar_copies)
    : dir_(std::move(dir)), tar_copies_(tar_copies) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().filename().string().rfind(kTempPrefix, 0) == 0) {
      fs::remove_all(entry.path(), ec);
      LogInfo("removed an unfinished graduation", {{"path", entry.path().string()}});
    }
  }
}

std::string GraduatedStore::Name(const std::string& layer_id) const {
  std::string name;
  for (char c : layer_id) name.push_back(c == ':' || c == '/' ? '-' : c);
  return name;
}

std::string GraduatedStore::LayerDir(const std::string& layer_id) const {
  return dir_ + "/" + Name(layer_id);
}

std::string GraduatedStore::FailuresPath(const std::string& layer_id) const {
  return dir_ + "/" + kFailuresPrefix + Name(layer_id);
}

std::optional<GraduatedLayer> GraduatedStore::Find(const std::string& layer_id) const {
  GraduatedLayer g;
  g.dir = LayerDir(layer_id);
  g.image = g.dir + "/" + kImage;
  struct stat st;
  if (::stat(g.image.c_str(), &st) != 0) return std::nullopt;
  for (const char* data : {kBlob, kTar}) {
    g.data = g.dir + "/" + data;
    g.method = data == kBlob ? "blob" : "tar";
    if (::stat(g.data.c_str(), &st) == 0) return g;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> GraduatedStore::Build(
    const std::string& layer_id, LayerReader& reader, const LayerOrigin& origin,
    const std::atomic<bool>& cancel) {
  const format::LayerIndex& index = reader.index();
  const absl::Time start = absl::Now();
  if (absl::Status s = MakeDir(dir_); !s.ok()) return s;
  const std::string final_dir = LayerDir(layer_id);
  auto copy = std::unique_ptr<PendingCopy>(new PendingCopy());
  copy->layer_id_ = layer_id;
  copy->tmp_ = fmt::format("{}/{}{}-{}", dir_, kTempPrefix, Name(layer_id), ::getpid());
  std::error_code ec;
  fs::remove_all(copy->tmp_, ec);
  if (absl::Status s = MakeDir(copy->tmp_); !s.ok()) return s;
  GraduationStats& stats = copy->stats_;

  std::optional<Digest> diff_id;
  const bool soci = tar_copies_ && index.format() == format::LayerFormat::kSoci;
  if (soci) {
    // No blob-layout fallback: the layer's tar, checked against its diff_id, or no copy.
    if (origin.blob == nullptr || !origin.diff_id) {
      return absl::FailedPreconditionError("a SOCI layer's copy needs its blob and diff_id");
    }
    absl::StatusOr<Digest> d = origin.diff_id();
    if (cancel) return absl::CancelledError("graduation cancelled");
    if (!d.ok()) {
      return absl::Status(d.status().code(),
                          fmt::format("no diff_id to check the layer's tar against: {}",
                                      std::string(d.status().message())));
    }
    diff_id = *d;
    stats.method = "tar";
    if (absl::Status s = WriteSociTarCopy(index, origin, *diff_id, copy->tmp_, final_dir, cancel,
                                          stats, copy->tar_payloads_);
        !s.ok()) {
      return s;
    }
  } else if (tar_copies_ && index.format() == format::LayerFormat::kZstdChunked &&
             origin.blob != nullptr && origin.diff_id && HoleBytes(index) <= kMaxTarHoleBytes) {
    absl::StatusOr<Digest> d = origin.diff_id();
    if (d.ok()) {
      diff_id = *d;
    } else if (cancel) {
      return absl::CancelledError("graduation cancelled");
    } else {
      LogInfo("no diff_id for a tar copy; the layer graduates in its blob layout",
              {{"layer", layer_id}, {"error", d.status().ToString()}});
    }
  }
  if (cancel) return absl::CancelledError("graduation cancelled");
  absl::Status built = soci ? absl::OkStatus() : absl::FailedPreconditionError("no tar copy");
  if (diff_id && !soci) {
    stats.method = "tar";
    built = WriteTarCopy(reader, *origin.blob, *diff_id, copy->tmp_, final_dir, cancel, stats,
                         copy->tar_payloads_);
    if (!built.ok()) {
      if (cancel || built.code() == absl::StatusCode::kCancelled) return built;
      LogWarn("cannot rebuild the layer's original tar; it graduates in its blob layout",
              {{"layer", layer_id}, {"error", built.ToString()}});
      ::unlink((copy->tmp_ + "/" + kTar).c_str());
      ::unlink((copy->tmp_ + "/" + kImage).c_str());
    }
  }
  if (!built.ok()) {
    copy->tar_payloads_.clear();
    const uint64_t fetched = stats.fetched_bytes;
    stats = GraduationStats{.method = "blob", .fetched_bytes = fetched};
    built = WriteBlobCopy(reader, copy->tmp_, final_dir, cancel, stats);
    if (!built.ok()) return built;
  }
  const std::string image = copy->tmp_ + "/" + kImage;
  if (::chmod(image.c_str(), 0400) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("chmod {}", image));
  }
  stats.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  nlohmann::json info = {
      {"layer", layer_id},
      {"method", stats.method},
      {"data_bytes", stats.data_bytes},
      {"fetched_bytes", stats.fetched_bytes},
      {"chunks_verified", stats.chunks_verified},
      {"inodes", index.inode_count()},
      {"graduated_at", absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone())}};
  if (diff_id && stats.method == "tar") info["diff_id"] = diff_id->ToString();
  if (absl::Status s = WriteSmallFile(copy->tmp_ + "/info.json", info.dump(2) + "\n"); !s.ok()) {
    return s;
  }
  SyncDir(copy->tmp_);
  for (const auto& entry : fs::directory_iterator(copy->tmp_, ec)) {
    stats.disk_bytes += AllocatedBytes(entry.path().string());
  }
  return copy;
}

absl::Status GraduatedStore::PendingCopy::AddFile(const std::string& name,
                                                  std::string_view content) {
  absl::Status s = WriteSmallFile(tmp_ + "/" + name, std::string(content));
  if (s.ok()) SyncDir(tmp_);
  return s;
}

absl::Status GraduatedStore::Publish(PendingCopy& copy) {
  const std::string final_dir = LayerDir(copy.layer_id_);
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  if (::rename(copy.tmp_.c_str(), final_dir.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("rename {} to {}", copy.tmp_, final_dir));
  }
  copy.published_ = true;
  SyncDir(dir_);
  return absl::OkStatus();
}

absl::Status GraduatedStore::Remove(const std::string& layer_id) {
  std::error_code ec;
  fs::remove_all(LayerDir(layer_id), ec);
  if (ec) {
    return absl::InternalError(fmt::format("remove {}: {}", LayerDir(layer_id), ec.message()));
  }
  ::unlink(FailuresPath(layer_id).c_str());
  return absl::OkStatus();
}

std::vector<std::string> GraduatedStore::RemoveAllBut(const std::set<std::string>& keep) {
  std::set<std::string> names;
  for (const std::string& id : keep) names.insert(Name(id));
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kTempPrefix, 0) == 0) continue;
    const bool failures = name.rfind(kFailuresPrefix, 0) == 0;
    if (failures) name = name.substr(sizeof(kFailuresPrefix) - 1);
    if (names.count(name) > 0) continue;
    std::error_code e;
    fs::remove_all(entry.path(), e);
    if (e) {
      LogWarn("cannot delete an unused graduated layer",
              {{"path", entry.path().string()}, {"error", e.message()}});
    } else if (!failures) {
      removed.push_back(entry.path().string());
    }
  }
  if (!removed.empty()) SyncDir(dir_);
  return removed;
}

int GraduatedStore::Failures(const std::string& layer_id) const {
  UniqueFd fd(::open(FailuresPath(layer_id).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return 0;
  char buf[16] = {};
  ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  int count = 0;
  if (n <= 0 || !absl::SimpleAtoi(absl::string_view(buf, static_cast<size_t>(n)), &count)) {
    return 1;  // a marker we cannot read still says it failed
  }
  return count;
}

absl::Status GraduatedStore::SetFailures(const std::string& layer_id, int count) {
  if (absl::Status s = MakeDir(dir_); !s.ok()) return s;
  const std::string path = FailuresPath(layer_id);
  ::unlink(path.c_str());  // 0400: rewrite by replacing
  absl::Status s = WriteSmallFile(path, fmt::format("{}\n", count));
  SyncDir(dir_);
  return s;
}

uint64_t GraduatedStore::DiskBytes() const {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) total += AllocatedBytes(it->path().string());
  }
  return total;
}

}  // namespace lazypull::mount::erofs
