// LayerReader: completing fetched chunks (decode, verify, store, hand to waiters), SOCI spans
// included, kept apart from the fetch and read paths in layer_reader.cc.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "base/logging.h"
#include "fetcher/format/chunk_decoder.h"
#include "fetcher/layer_reader/chunk_spool.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fmt/format.h"

namespace lazypull {

using format::Chunk;
using format::ChunkCompression;
using format::Ino;

void LayerReader::FinishChunk(const ChunkRef& ref, std::string_view compressed) {
  const Chunk& c = *ref.chunk;
  if (c.compression == ChunkCompression::kGzipSpan) {
    FinishSpan(ref, compressed);
    return;
  }
  // Decoded without the digest check, then hashed once here: readers are answered from these
  // verified bytes before they are stored, so no reader waits for the disk.
  Chunk unverified = c;
  unverified.has_digest = false;
  absl::StatusOr<std::string> data = format::DecodeChunk(unverified, compressed);
  absl::Status st = data.status();
  if (st.ok() && c.has_digest) st = c.digest_value().Verify(*data);
  if (!st.ok()) {
    RejectUnverified(ref, "chunk", st);
    return;
  }
  auto bytes = std::make_shared<const std::string>(std::move(*data));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.chunks_fetched;
  }
  if (!c.has_digest) {
    // Never stored, so fetched for every read (layer_reader.h): forgotten before its waiters
    // are woken, so no later read joins it.
    RetireFlight(c, ref.flight, false);
    PublishFlight(ref.flight, absl::OkStatus(), bytes);
    return;
  }
  // The flight stays registered (done) until the chunk is stored: a read arriving meanwhile
  // takes the bytes from it instead of fetching them again.
  PublishFlight(ref.flight, absl::OkStatus(), bytes);
  absl::Status put = cache_->PutVerified(c.digest_value(), *bytes);
  if (!put.ok()) {
    LogWarn(
        "served a verified chunk without caching it",
        {{"layer", layer_id_}, {"chunk_offset", c.compressed_offset}, {"error", put.ToString()}});
  }
  RetireFlight(c, ref.flight, put.ok());
}

bool LayerReader::RefetchElsewhere(const ChunkRef& ref) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ref.flight->refetched || stopping_) return false;
    ref.flight->refetched = true;
  }
  const Chunk& c = *ref.chunk;
  if (!blob_->ReportCorruption(c.compressed_offset, c.compressed_length)) return false;
  SubmitFetch({ref}, FetchKind::kOnDemand);
  return true;
}

void LayerReader::FinishSpool(const ChunkRef& ref, ChunkSpool& spool) {
  const Chunk& c = *ref.chunk;
  bool stored = false;
  absl::StatusOr<std::shared_ptr<const TempChunk>> file = spool.Finish(&stored);
  if (!file.ok()) {
    absl::Status st =
        absl::Status(file.status().code(),
                     fmt::format("layer {}: chunk at blob offset {} (+{}) failed verification: {}",
                                 layer_id_, c.compressed_offset, c.compressed_length,
                                 std::string(file.status().message())));
    LogError("layer chunk rejected", {{"layer", layer_id_},
                                      {"chunk_offset", c.compressed_offset},
                                      {"chunk_length", c.compressed_length},
                                      {"error", st.ToString()}});
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (st.code() == absl::StatusCode::kDataLoss) ++stats_.verify_errors;
    }
    if (st.code() != absl::StatusCode::kDataLoss || !RefetchElsewhere(ref)) {
      CompleteFlight(c, ref.flight, st, {}, false);
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.chunks_fetched;
    ref.flight->file = *file;
  }
  PublishFlight(ref.flight, absl::OkStatus(), nullptr);
  RetireFlight(c, ref.flight, stored);
}

void LayerReader::RejectUnverified(const ChunkRef& ref, std::string_view what,
                                   const absl::Status& cause) {
  const Chunk& c = *ref.chunk;
  const absl::Status st = absl::DataLossError(
      fmt::format("layer {}: {} at blob offset {} (+{}) failed verification: {}", layer_id_, what,
                  c.compressed_offset, c.compressed_length, std::string(cause.message())));
  LogError(fmt::format("layer {} rejected", what), {{"layer", layer_id_},
                                                    {"chunk_offset", c.compressed_offset},
                                                    {"chunk_length", c.compressed_length},
                                                    {"error", st.ToString()}});
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.verify_errors;
  }
  if (!RefetchElsewhere(ref)) CompleteFlight(c, ref.flight, st, {}, false);
}

void LayerReader::FinishSpan(const ChunkRef& ref, std::string_view compressed) {
  const Chunk& c = *ref.chunk;
  // The compressed span is checked against its digest before a byte of it is inflated.
  absl::StatusOr<std::string> span = format::DecodeSpan(c, compressed, index_->span_decoder());
  if (!span.ok() && span.status().code() != absl::StatusCode::kDataLoss &&
      span.status().code() != absl::StatusCode::kInvalidArgument) {
    // Not the span's bytes but what inflating it needs from elsewhere (a fine index's window:
    // e.g. Unavailable): fail this read with that error, not as a verification failure.
    const absl::Status st(
        span.status().code(),
        fmt::format("layer {}: span at blob offset {} (+{}): {}", layer_id_, c.compressed_offset,
                    c.compressed_length, std::string(span.status().message())));
    LogWarn(
        "layer span not inflated",
        {{"layer", layer_id_}, {"chunk_offset", c.compressed_offset}, {"error", st.ToString()}});
    CompleteFlight(c, ref.flight, st, {}, false);
    return;
  }
  if (!span.ok()) {
    RejectUnverified(ref, "span", span.status());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.chunks_fetched;
  }
  // Waiters copy their slices from the inflated span; the cache keeps the compressed span
  // under its own digest, so its re-verification on open keeps working.
  auto inflated = std::make_shared<const std::string>(std::move(*span));
  inflated_spans_.Put(c.compressed_range(), inflated);
  PublishFlight(ref.flight, absl::OkStatus(), std::move(inflated));
  absl::Status put = cache_->PutVerified(c.digest_value(), compressed);
  if (!put.ok()) {
    LogWarn(
        "served a verified span without caching it",
        {{"layer", layer_id_}, {"chunk_offset", c.compressed_offset}, {"error", put.ToString()}});
  }
  RetireFlight(c, ref.flight, put.ok());
}

bool LayerReader::ReadSpanLocal(const Chunk& c, Ino ino, uint64_t chunk_off, char* dst, size_t n) {
  const format::SpanDecoder* decoder = index_->span_decoder();
  if (decoder == nullptr) return false;
  std::shared_ptr<const std::string> span = inflated_spans_.Get(c.compressed_range());
  if (span == nullptr) {
    if (!cache_->Contains(c.digest_value())) return false;
    // The cache verifies a stored span on its first read in this process (ChunkCache::Read).
    std::string compressed(c.compressed_length, '\0');
    absl::StatusOr<size_t> got =
        cache_->Read(c.digest_value(), 0, compressed.data(), compressed.size());
    if (!got.ok() || *got != compressed.size()) {
      if (!got.ok() && got.status().code() == absl::StatusCode::kDataLoss) {
        LogWarn("cached span did not verify; refetching", {{"layer", layer_id_},
                                                           {"file", index_->Path(ino)},
                                                           {"chunk_offset", c.compressed_offset}});
      }
      return false;
    }
    absl::StatusOr<std::string> inflated = decoder->Inflate(c, compressed);
    if (!inflated.ok()) {
      LogWarn("cached span did not inflate; refetching", {{"layer", layer_id_},
                                                          {"file", index_->Path(ino)},
                                                          {"chunk_offset", c.compressed_offset},
                                                          {"error", inflated.status().ToString()}});
      return false;
    }
    span = std::make_shared<const std::string>(std::move(*inflated));
    inflated_spans_.Put(c.compressed_range(), span);
  }
  const uint64_t from = c.inner_offset + chunk_off;
  if (from > span->size() || n > span->size() - from) return false;
  std::memcpy(dst, span->data() + from, n);
  return true;
}

}  // namespace lazypull
