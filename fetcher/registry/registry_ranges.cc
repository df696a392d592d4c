#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/registry/byteranges.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::registry {

using namespace internal;  // NOLINT(build/namespaces): this module's own helpers

absl::StatusOr<std::string> RegistryClient::ReadRange(const Reference& ref,
                                                      const oci::Descriptor& desc, uint64_t offset,
                                                      uint64_t length,
                                                      const std::function<bool()>& cancelled) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(fmt::format("range [{}, +{}) is past the end {} of blob {} in {}",
                                             offset, length, size, desc.digest.ToString(),
                                             ref.Name()));
  }
  if (length == 0) return std::string();
  const ByteRange range{offset, length};
  std::string out;
  uint64_t done = 0;
  absl::Status st = StreamCovering(
      ref, desc, std::span<const ByteRange>(&range, 1), std::span<uint64_t>(&done, 1),
      [&](uint64_t, std::string_view data) {
        out.append(data);
        return absl::OkStatus();
      },
      cancelled);
  if (!st.ok()) return st;
  return out;
}

namespace {

// Most ranges asked in one multi-range request: keeps the Range header well under the 8 KiB
// that common HTTP servers and proxies accept.
constexpr size_t kMaxRangesPerRequest = 64;

// Hands streamed blob bytes to the caller's sink, range by range, each byte once and in order
// within its range. Bytes that do not continue a range exactly where it stands (a repeat after
// a retry, or a hole left by a server that answered less than asked) are not delivered: the
// range stays incomplete and is fetched again by a later request.
class RangeDelivery {
 public:
  RangeDelivery(std::span<const ByteRange> ranges, std::span<uint64_t> done,
                const BlobReader::Sink& sink)
      : ranges_(ranges), done_(done), sink_(sink) {}

  // Blob bytes [offset, offset + data.size()). Returns the sink's first error.
  absl::Status Deliver(uint64_t offset, std::string_view data) {
    const uint64_t end = offset + data.size();
    auto first = std::partition_point(ranges_.begin(), ranges_.end(),
                                      [&](const ByteRange& r) { return r.end() <= offset; });
    for (size_t i = first - ranges_.begin(); i < ranges_.size() && ranges_[i].offset < end; ++i) {
      const ByteRange& r = ranges_[i];
      const uint64_t want = r.offset + done_[i];
      if (want >= r.end() || want < offset || want >= end) continue;
      const uint64_t to = std::min(end, r.end());
      if (absl::Status st = sink_(want, data.substr(want - offset, to - want)); !st.ok()) {
        sink_error_ = st;
        return st;
      }
      done_[i] += to - want;
    }
    return absl::OkStatus();
  }

  // The parts of the ranges not delivered yet.
  std::vector<ByteRange> Remaining() const {
    std::vector<ByteRange> out;
    for (size_t i = 0; i < ranges_.size(); ++i) {
      if (done_[i] < ranges_[i].length) {
        out.push_back({ranges_[i].offset + done_[i], ranges_[i].length - done_[i]});
      }
    }
    return out;
  }
  bool Complete() const {
    for (size_t i = 0; i < ranges_.size(); ++i) {
      if (done_[i] < ranges_[i].length) return false;
    }
    return true;
  }
  uint64_t last_end() const { return ranges_.back().end(); }
  const absl::Status& sink_error() const { return sink_error_; }

 private:
  std::span<const ByteRange> ranges_;
  std::span<uint64_t> done_;
  const BlobReader::Sink& sink_;
  absl::Status sink_error_;
};

}  // namespace

std::optional<bool> RegistryClient::MultiRangeSupport(const std::string& host) const {
  std::lock_guard<std::mutex> l(multi_range_mu_);
  auto it = multi_range_.find(host);
  if (it == multi_range_.end()) return std::nullopt;
  return it->second;
}

void RegistryClient::LearnMultiRange(const std::string& host, bool supported) {
  std::lock_guard<std::mutex> l(multi_range_mu_);
  auto [it, inserted] = multi_range_.emplace(host, supported);
  if (!inserted) {
    if (it->second == supported) return;
    it->second = supported;
  }
  LogInfo("registry multi-range support learned", {{"host", host}, {"multi_range", supported}});
}

absl::Status RegistryClient::StreamRanges(const Reference& ref, const oci::Descriptor& desc,
                                          std::span<const ByteRange> ranges,
                                          const BlobReader::Sink& sink,
                                          const std::function<bool()>& cancelled) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  for (size_t i = 0; i < ranges.size(); ++i) {
    const ByteRange& r = ranges[i];
    if (r.length == 0 || r.offset > size || r.length > size - r.offset ||
        (i > 0 && r.offset < ranges[i - 1].end())) {
      return absl::InvalidArgumentError(fmt::format(
          "blob {} of {} ({} bytes): ranges must be non-empty, sorted, disjoint and inside the "
          "blob; range {} is [{}, +{})",
          desc.digest.ToString(), ref.Name(), size, i, r.offset, r.length));
    }
  }
  if (ranges.empty()) return absl::OkStatus();
  std::vector<uint64_t> done(ranges.size(), 0);
  if (config_.multi_range && ranges.size() > 1 && MultiRangeSupport(ref.host) != false) {
    for (size_t first = 0; first + 1 < ranges.size(); first += kMaxRangesPerRequest) {
      const size_t n = std::min(kMaxRangesPerRequest, ranges.size() - first);
      if (n < 2) break;
      absl::Status st =
          StreamMultipart(ref, desc, ranges.subspan(first, n),
                          std::span<uint64_t>(done).subspan(first, n), sink, cancelled);
      if (!st.ok()) return st;
      if (MultiRangeSupport(ref.host) == false) break;
    }
  }
  // What is left (everything when the registry cannot do multi-range): requests in parallel,
  // ranges closer than merge_gap_bytes sharing one request.
  struct Group {
    size_t first, last;  // [first, last) of `ranges`
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (done[i] == ranges[i].length) continue;
    if (!groups.empty() && groups.back().last == i &&
        ranges[i].offset <= ranges[i - 1].end() + config_.merge_gap_bytes) {
      groups.back().last = i + 1;
    } else {
      groups.push_back({i, i + 1});
    }
  }
  if (groups.empty()) return absl::OkStatus();
  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status first_error;
  auto worker = [&] {
    for (size_t gi = next++; gi < groups.size(); gi = next++) {
      const Group& g = groups[gi];
      absl::Status st = StreamCovering(ref, desc, ranges.subspan(g.first, g.last - g.first),
                                       std::span<uint64_t>(done).subspan(g.first, g.last - g.first),
                                       sink, cancelled);
      if (!st.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (first_error.ok()) first_error = st;
        next = groups.size();  // stop the other workers after their current request
        return;
      }
    }
  };
  size_t workers = std::min<size_t>(
      {groups.size(), 8, static_cast<size_t>(std::max(1, config_.max_concurrency_per_host))});
  std::vector<std::thread> threads;
  for (size_t t = 1; t < workers; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  return first_error;
}

absl::Status RegistryClient::StreamMultipart(const Reference& ref, const oci::Descriptor& desc,
                                             std::span<const ByteRange> ranges,
                                             std::span<uint64_t> done, const BlobReader::Sink& sink,
                                             const std::function<bool()>& cancelled) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  RangeDelivery delivery(ranges, done, sink);
  enum class Answer { kNone, kMultipart, kSingle, kWhole };
  Answer answer = Answer::kNone;
  size_t asked = 0;         // ranges in this attempt's Range header
  uint64_t body_pos = 0;    // blob offset of the next body byte (single range or whole blob)
  uint64_t body_limit = 0;  // end of the single range answered
  std::optional<ByterangesParser> parser;
  absl::Status malformed;

  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = fmt::format("GET blob {} ({} ranges from {})", desc.digest.ToString(), ranges.size(),
                          ranges.front().offset);
  call.accept = {200, 206};
  call.retry_data_loss = false;  // a malformed multipart answer is not worth repeating
  call.cancelled = cancelled;
  call.blob = desc.digest.ToString();
  call.range_span = ByteRange{ranges.front().offset, ranges.back().end() - ranges.front().offset};
  call.on_attempt = [&](HttpHeaders* h) {
    answer = Answer::kNone;
    parser.reset();
    malformed = absl::OkStatus();
    std::vector<ByteRange> want = delivery.Remaining();
    asked = want.size();
    h->emplace_back("Range", RangeHeaderValue(want));
  };
  call.sink = [&](const HttpResponse& head, std::string_view data) -> bool {
    if (!delivery.sink_error().ok()) return false;
    if (answer == Answer::kNone) {
      if (head.status == 206) {
        if (std::optional<std::string> b = ByterangesBoundary(head.Header("content-type"))) {
          answer = Answer::kMultipart;
          parser.emplace(std::move(*b), size);
        } else {
          std::optional<ContentRange> cr = ParseContentRange(head.Header("content-range"));
          if (!cr || !ContentRangeInside(*cr, size)) {
            malformed = absl::DataLossError(fmt::format(
                "206 answer to a multi-range request is neither multipart/byteranges nor a "
                "valid single range (Content-Type \"{}\", Content-Range \"{}\")",
                head.Header("content-type").substr(0, 100),
                head.Header("content-range").substr(0, 100)));
            return false;
          }
          answer = Answer::kSingle;
          body_pos = cr->offset;
          body_limit = cr->offset + cr->length;
        }
      } else {
        answer = Answer::kWhole;  // 200: the server ignored Range
        body_pos = 0;
        body_limit = size;
      }
    }
    if (answer == Answer::kMultipart) {
      absl::Status st = parser->Feed(
          data, [&](uint64_t off, std::string_view d) { return delivery.Deliver(off, d); });
      if (!st.ok() && delivery.sink_error().ok()) malformed = st;
      return st.ok();
    }
    if (data.size() > body_limit - body_pos) {
      malformed = absl::DataLossError(
          fmt::format("body longer than its range [{}, {})", body_pos, body_limit));
      return false;
    }
    if (!delivery.Deliver(body_pos, data).ok()) return false;
    body_pos += data.size();
    // Past the last range with more coming (the whole blob): stop instead of reading it all.
    // A natural end must not be cut, or the connection could not be reused.
    return body_pos < delivery.last_end() || body_pos >= body_limit;
  };
  call.validate = [&](const HttpResponse& r) -> absl::Status {
    if (!delivery.sink_error().ok()) return absl::AbortedError("the reader stopped the transfer");
    if (!malformed.ok()) {
      LearnMultiRange(ref.host, false);
      return malformed;
    }
    if (answer == Answer::kMultipart) {
      LearnMultiRange(ref.host, true);
      // A body cut short without a transport error: fetch the rest again.
      if (absl::Status st = parser->Finish(); !st.ok() && !delivery.Complete()) {
        return absl::UnavailableError(std::string(st.message()));
      }
      return absl::OkStatus();
    }
    // A plain answer to several ranges: this registry (or the store it redirects to) does not
    // do multi-range; what is missing is fetched with one range per request from now on.
    if (asked > 1) LearnMultiRange(ref.host, false);
    return absl::OkStatus();
  };
  absl::StatusOr<HttpResponse> resp = Execute(ref, call);
  if (!delivery.sink_error().ok()) return delivery.sink_error();
  if (!resp.ok()) {
    LogError("registry multi-range read failed", {{"host", ref.host},
                                                  {"repository", ref.repository},
                                                  {"digest", desc.digest.ToString()},
                                                  {"ranges", ranges.size()},
                                                  {"error", resp.status().ToString()}});
    return resp.status();
  }
  return absl::OkStatus();
}

absl::Status RegistryClient::StreamCovering(const Reference& ref, const oci::Descriptor& desc,
                                            std::span<const ByteRange> ranges,
                                            std::span<uint64_t> done, const BlobReader::Sink& sink,
                                            const std::function<bool()>& cancelled) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  RangeDelivery delivery(ranges, done, sink);
  bool started = false;
  uint64_t body_pos = 0, body_limit = 0, attempt_start = 0;
  absl::Status bad_answer;

  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = fmt::format("GET blob {} range [{}, {})", desc.digest.ToString(),
                          ranges.front().offset, ranges.back().end());
  call.accept = {200, 206};
  call.cancelled = cancelled;
  call.blob = desc.digest.ToString();
  call.range_span = ByteRange{ranges.front().offset, ranges.back().end() - ranges.front().offset};
  call.on_attempt = [&](HttpHeaders* h) {
    started = false;
    bad_answer = absl::OkStatus();
    attempt_start = delivery.Remaining().front().offset;
    h->emplace_back("Range", fmt::format("bytes={}-{}", attempt_start, delivery.last_end() - 1));
  };
  call.sink = [&](const HttpResponse& head, std::string_view data) -> bool {
    if (!delivery.sink_error().ok()) return false;
    if (!started) {
      started = true;
      body_pos = 0;
      body_limit = size;
      if (head.status == 206) {
        std::optional<ContentRange> cr = ParseContentRange(head.Header("content-range"));
        if (!cr || cr->offset != attempt_start || !ContentRangeInside(*cr, size)) {
          bad_answer = absl::DataLossError(fmt::format(
              "Content-Range \"{}\" does not answer bytes={}-{}",
              head.Header("content-range").substr(0, 100), attempt_start, delivery.last_end() - 1));
          return false;
        }
        body_pos = cr->offset;
        body_limit = cr->offset + cr->length;
      }
    }
    if (data.size() > body_limit - body_pos) {
      bad_answer = absl::DataLossError("206 body longer than its Content-Range");
      return false;
    }
    if (!delivery.Deliver(body_pos, data).ok()) return false;
    body_pos += data.size();
    return body_pos < delivery.last_end() || body_pos >= body_limit;
  };
  call.validate = [&](const HttpResponse&) -> absl::Status {
    if (!delivery.sink_error().ok()) return absl::AbortedError("the reader stopped the transfer");
    if (!bad_answer.ok()) return bad_answer;
    if (!delivery.Complete()) {
      // Retried: the next attempt asks only for what is still missing.
      return absl::UnavailableError(
          fmt::format("short body: {} range(s) incomplete", delivery.Remaining().size()));
    }
    return absl::OkStatus();
  };
  absl::StatusOr<HttpResponse> resp = Execute(ref, call);
  if (!delivery.sink_error().ok()) return delivery.sink_error();
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<bool> RegistryClient::ProbeMirrorRanges(const Reference& ref,
                                                       const oci::Descriptor& desc,
                                                       const RegistryHost& host,
                                                       const std::function<bool()>& cancelled) {
  const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(desc.size), 4096);
  if (n == 0) return true;
  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = fmt::format("probe GET blob {} range [0, {})", desc.digest.ToString(), n);
  call.accept = {200, 206};
  call.cancelled = cancelled;
  call.blob = desc.digest.ToString();
  call.range_span = ByteRange{0, n};
  call.on_attempt = [&](HttpHeaders* h) {
    h->emplace_back("Range", fmt::format("bytes=0-{}", n - 1));
  };
  // The bytes are not used: whether the mirror answers the range is the point.
  call.sink = [](const HttpResponse&, std::string_view) { return true; };
  call.validate = [](const HttpResponse&) { return absl::OkStatus(); };
  absl::StatusOr<HttpResponse> resp = ExecuteOnHost(ref, host, call, /*last_host=*/false);
  if (resp.ok()) return true;
  if (call.range_refused) return false;
  return resp.status();
}

class RegistryClient::RegistryBlobReader : public BlobReader {
 public:
  RegistryBlobReader(RegistryClient* client, Reference ref, oci::Descriptor desc)
      : client_(client), ref_(std::move(ref)), desc_(std::move(desc)) {}

  uint64_t Size() const override { return static_cast<uint64_t>(desc_.size); }

  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    return client_->ReadRange(ref_, desc_, offset, length, cancelled_fn_);
  }

  absl::Status StreamRanges(std::span<const ByteRange> ranges, const Sink& sink) override {
    return client_->StreamRanges(ref_, desc_, ranges, sink, cancelled_fn_);
  }

  void Cancel() override { cancelled_ = true; }

  std::optional<std::chrono::steady_clock::time_point> BulkReadsReadyAt() override {
    return client_->MirrorReadyAt(ref_, desc_, cancelled_fn_);
  }

  bool ReportCorruption(uint64_t offset, uint64_t length) override {
    return client_->ReportBadBytes(ref_, desc_, ByteRange{offset, length});
  }

 private:
  std::atomic<bool> cancelled_{false};
  const std::function<bool()> cancelled_fn_ = [this] { return cancelled_.load(); };
  RegistryClient* const client_;
  const Reference ref_;
  const oci::Descriptor desc_;
};

std::unique_ptr<BlobReader> RegistryClient::OpenBlob(const Reference& ref,
                                                     const oci::Descriptor& desc) {
  return std::make_unique<RegistryBlobReader>(this, ref, desc);
}

}  // namespace lazypull::registry
