#include "mount/erofs/soci_tar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "base/unique_fd.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/layer_decompressor.h"
#include "fetcher/format/gzip_spans.h"
#include "fmt/format.h"
#include "mount/erofs/tar_payloads.h"

namespace lazypull::mount::erofs {
namespace {

using format::GzipSpan;
using format::GzipSpans;
using format::Ino;

absl::Status PreadAll(int fd, uint64_t at, char* dst, size_t len, const std::string& what) {
  for (size_t done = 0; done < len;) {
    ssize_t n = ::pread(fd, dst + done, len - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(fmt::format("{}: reading at {}: {}", what, at + done,
                                             n < 0 ? std::strerror(errno) : "end of file"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, uint64_t at, std::string_view data, const std::string& what) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return absl::ErrnoToStatus(errno, fmt::format("{}: writing at {}", what, at + done));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The compressed layer as the gunzip reads it, front to back: each byte from a span checked
// against its digest (see the header). Not thread-safe (one sequential reader).
class VerifiedSpanBlob : public BlobReader {
 public:
  VerifiedSpanBlob(std::vector<GzipSpan> spans, uint64_t size, ChunkCache* cache, BlobReader& blob,
                   std::string spool, const std::atomic<bool>& cancel, SociTar& stats)
      : spans_(std::move(spans)),
        size_(size),
        cache_(cache),
        blob_(blob),
        spool_(std::move(spool)),
        cancel_(cancel),
        stats_(stats) {}
  ~VerifiedSpanBlob() override { ::unlink(spool_.c_str()); }

  uint64_t Size() const override { return size_; }

  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    if (offset > size_ || length > size_ - offset) {
      return absl::OutOfRangeError(fmt::format("[{}, +{}) past the layer's end", offset, length));
    }
    std::string out(length, '\0');
    for (uint64_t pos = offset; pos < offset + length;) {
      if (cancel_) return absl::CancelledError("graduation cancelled");
      const uint64_t end = offset + length;
      char* dst = out.data() + (pos - offset);
      if (pos < spans_.front().compressed.offset) {  // the gzip header
        const uint64_t n = std::min(end, spans_.front().compressed.offset) - pos;
        absl::StatusOr<std::string> head = blob_.ReadAt(pos, n);
        if (!head.ok()) return head.status();
        std::memcpy(dst, head->data(), n);
        stats_.fetched_bytes += n;
        pos += n;
        continue;
      }
      // Spans are in blob order and the gunzip reads forward: move on to the span holding pos.
      while (current_ + 1 < spans_.size() && spans_[current_].compressed.end() <= pos) ++current_;
      const GzipSpan& span = spans_[current_];
      if (pos < span.compressed.offset || pos >= span.compressed.end()) {
        return absl::DataLossError(fmt::format("blob offset {} lies in no span", pos));
      }
      if (loaded_ != current_) {
        if (absl::Status s = Load(current_); !s.ok()) return s;
      }
      const uint64_t n = std::min(end, span.compressed.end()) - pos;
      if (absl::Status s =
              PreadAll(fd_, pos - span.compressed.offset, dst, n, fmt::format("span {}", current_));
          !s.ok()) {
        return s;
      }
      pos += n;
    }
    return out;
  }

 private:
  // Makes span `i`'s verified compressed bytes readable through fd_.
  absl::Status Load(size_t i) {
    const GzipSpan& span = spans_[i];
    handle_.reset();
    fd_ = -1;
    if (cache_ != nullptr && cache_->Contains(span.digest)) {
      // The first read of a chunk file an earlier process left hashes the whole file.
      char probe;
      absl::StatusOr<size_t> first = cache_->Read(span.digest, 0, &probe, 1);
      absl::StatusOr<ChunkCache::ReadHandle> h =
          first.ok() ? cache_->OpenVerified(span.digest) : first.status();
      if (h.ok() && h->size() == span.compressed.length) {
        handle_ = *h;
        fd_ = handle_->fd();
        stats_.cached_bytes += span.compressed.length;
        ++stats_.spans_verified;
        loaded_ = i;
        return absl::OkStatus();
      }
      // Gone or damaged meanwhile: fetched below like a span the cache never had.
    }
    spool_fd_.Reset(::open(spool_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!spool_fd_.valid()) return absl::ErrnoToStatus(errno, fmt::format("create {}", spool_));
    Sha256 sha;
    for (uint64_t done = 0; done < span.compressed.length;) {
      if (cancel_) return absl::CancelledError("graduation cancelled");
      const uint64_t n = std::min<uint64_t>(kGraduationPieceBytes, span.compressed.length - done);
      absl::StatusOr<std::string> piece = blob_.ReadAt(span.compressed.offset + done, n);
      if (!piece.ok()) return piece.status();
      sha.Update(*piece);
      if (absl::Status s = PwriteAll(spool_fd_.get(), done, *piece, spool_); !s.ok()) return s;
      done += n;
    }
    stats_.fetched_bytes += span.compressed.length;
    if (sha.Finish() != span.digest) {
      return absl::DataLossError(
          fmt::format("span {} (blob bytes [{}, +{})) does not match its digest {}", i,
                      span.compressed.offset, span.compressed.length, span.digest.ToString()));
    }
    fd_ = spool_fd_.get();
    ++stats_.spans_verified;
    loaded_ = i;
    return absl::OkStatus();
  }

  const std::vector<GzipSpan> spans_;  // non-empty, checked to tile the blob
  const uint64_t size_;
  ChunkCache* const cache_;
  BlobReader& blob_;
  const std::string spool_;
  const std::atomic<bool>& cancel_;
  SociTar& stats_;
  size_t current_ = 0;
  size_t loaded_ = SIZE_MAX;
  std::optional<ChunkCache::ReadHandle> handle_;
  UniqueFd spool_fd_;
  int fd_ = -1;  // of handle_ or spool_fd_
};

// BlobSink over a SparseFileSink (the gunzip writes into a BlobSink).
class SparseBlobSink : public convert::BlobSink {
 public:
  explicit SparseBlobSink(SparseFileSink& out) : out_(out) {}
  absl::Status Append(std::string_view data) override { return out_.Append(data); }
  uint64_t size() const override { return out_.size(); }
  absl::StatusOr<Digest> Finish() override { return out_.Finish(); }

 private:
  SparseFileSink& out_;
};

}  // namespace

absl::StatusOr<std::vector<uint64_t>> SociTarPayloads(const format::LayerIndex& index) {
  const GzipSpans* spans = format::GzipSpansOf(index);
  if (spans == nullptr) return absl::FailedPreconditionError("the layer has no gzip spans");
  std::vector<uint64_t> payloads(index.inode_count(), kNoPayload);
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    std::span<const format::Chunk> chunks = index.Chunks(ino);
    if (chunks.empty()) continue;
    std::optional<uint64_t> first = spans->UncompressedOffset(chunks.front());
    if (!first || *first < chunks.front().file_offset) {
      return absl::InvalidArgumentError(
          fmt::format("file {}: its first chunk names no span", index.Path(ino)));
    }
    const uint64_t payload = *first - chunks.front().file_offset;
    for (const format::Chunk& c : chunks) {
      if (spans->UncompressedOffset(c) != payload + c.file_offset) {
        return absl::InvalidArgumentError(fmt::format(
            "file {}: the chunk at offset {} is not where its payload continues in the tar",
            index.Path(ino), c.file_offset));
      }
    }
    payloads[ino - 1] = payload;
  }
  return payloads;
}

absl::StatusOr<SociTar> InflateSociTar(const format::LayerIndex& index, ChunkCache* cache,
                                       BlobReader& blob, SparseFileSink& out,
                                       const std::string& spool, const std::atomic<bool>& cancel) {
  const GzipSpans* table = format::GzipSpansOf(index);
  if (table == nullptr || table->span_count() == 0) {
    return absl::FailedPreconditionError("the layer has no gzip spans");
  }
  const uint64_t size = index.blob_size();
  if (blob.Size() != size) {
    return absl::DataLossError(
        fmt::format("the blob has {} bytes, its zTOC describes {}", blob.Size(), size));
  }
  std::vector<GzipSpan> spans;
  spans.reserve(table->span_count());
  for (size_t i = 0; i < table->span_count(); ++i) {
    spans.push_back(table->span(i));
    const GzipSpan& s = spans.back();
    const uint64_t covered = i == 0 ? s.compressed.offset : spans[i - 1].compressed.end();
    const uint64_t from = i == 0 ? 0 : spans[i - 1].compressed.offset;
    if (s.compressed.offset > covered || s.compressed.offset < from || s.compressed.end() > size) {
      return absl::DataLossError(
          fmt::format("span {} at blob bytes [{}, +{}) does not continue the spans before it", i,
                      s.compressed.offset, s.compressed.length));
    }
  }
  if (spans.back().compressed.end() != size) {
    return absl::DataLossError(fmt::format("the spans end at blob offset {}, the blob at {}",
                                           spans.back().compressed.end(), size));
  }
  SociTar result;
  VerifiedSpanBlob verified(std::move(spans), size, cache, blob, spool, cancel, result);
  SparseBlobSink sink(out);
  absl::StatusOr<convert::DecompressedLayer> tar = convert::DecompressLayer(
      verified, convert::InputCompression::kGzip, sink, "the layer's verified spans");
  if (!tar.ok()) return tar.status();
  result.digest = tar->diff_id;
  result.size = tar->size;
  return result;
}

}  // namespace lazypull::mount::erofs
