#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::registry {

using namespace internal;  // NOLINT(build/namespaces): this module's own helpers

absl::StatusOr<std::string> RegistryClient::ReadRange(const Reference& ref,
                                                      const oci::Descriptor& desc, uint64_t offset,
                                                      uint64_t length,
                                                      const std::optional<Digest>& expected) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(fmt::format("range [{}, +{}) is past the end {} of blob {} in {}",
                                             offset, length, size, desc.digest.ToString(),
                                             ref.Name()));
  }
  if (length == 0) return std::string();
  const uint64_t end = offset + length;
  std::string out;
  uint64_t pos = 0;
  bool overlong = false;
  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = fmt::format("GET blob {} range [{}, +{})", desc.digest.ToString(), offset, length);
  call.accept = {200, 206};
  call.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, end - 1));
  call.on_attempt = [&](HttpHeaders*) {
    out.clear();
    out.reserve(length);
    pos = 0;
    overlong = false;
  };
  call.sink = [&](int status, std::string_view data) -> bool {
    if (status == 206) {
      if (out.size() + data.size() > length) {
        overlong = true;
        return false;
      }
      out.append(data);
      return true;
    }
    // 200: the server ignored Range and sends the whole blob; keep only our window.
    uint64_t b = pos, e = pos + data.size();
    pos = e;
    if (e > offset && b < end) {
      uint64_t from = std::max(b, offset), to = std::min(e, end);
      out.append(data.substr(from - b, to - from));
    }
    return pos < end;
  };
  call.validate = [&](const HttpResponse& r) -> absl::Status {
    if (overlong) return absl::DataLossError("206 body longer than the requested range");
    if (r.status == 206) {
      std::string cr = r.Header("content-range");
      std::string want = fmt::format("bytes {}-{}/", offset, end - 1);
      if (!cr.starts_with(want) ||
          (cr.substr(want.size()) != "*" && cr.substr(want.size()) != std::to_string(size))) {
        return absl::DataLossError(
            fmt::format("Content-Range \"{}\" does not match the requested {}{}", cr, want, size));
      }
    }
    if (out.size() != length) {
      return absl::DataLossError(fmt::format("short body: {} of {} bytes", out.size(), length));
    }
    if (expected) return expected->Verify(out);
    return absl::OkStatus();
  };
  auto resp = Execute(ref, call);
  if (!resp.ok()) return resp.status();
  return out;
}

class RegistryClient::RegistryBlobReader : public BlobReader {
 public:
  RegistryBlobReader(RegistryClient* client, Reference ref, oci::Descriptor desc)
      : client_(client), ref_(std::move(ref)), desc_(std::move(desc)) {}

  uint64_t Size() const override { return static_cast<uint64_t>(desc_.size); }

  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    return client_->ReadRange(ref_, desc_, offset, length);
  }

  absl::StatusOr<std::vector<std::string>> ReadRanges(
      const std::vector<ByteRange>& ranges) override {
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ranges[a].offset < ranges[b].offset; });
    std::vector<std::string> out(ranges.size());
    const uint64_t gap = client_->config_.merge_gap_bytes;
    // Merge ranges that touch (or are within `gap`) into groups: one request per group.
    struct Group {
      uint64_t start, end;
      size_t first, last;  // [first, last) in `order`
    };
    std::vector<Group> groups;
    for (size_t i = 0; i < order.size();) {
      Group g{ranges[order[i]].offset, ranges[order[i]].end(), i, i + 1};
      while (g.last < order.size() && ranges[order[g.last]].offset <= g.end + gap) {
        g.end = std::max(g.end, ranges[order[g.last]].end());
        ++g.last;
      }
      groups.push_back(g);
      i = g.last;
    }
    // Groups are fetched in parallel (the per-host cap still bounds connections).
    std::atomic<size_t> next{0};
    std::mutex mu;
    absl::Status first_error;
    auto worker = [&] {
      for (size_t gi = next++; gi < groups.size(); gi = next++) {
        const Group& g = groups[gi];
        auto data = client_->ReadRange(ref_, desc_, g.start, g.end - g.start);
        if (!data.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.ok()) first_error = data.status();
          return;
        }
        for (size_t k = g.first; k < g.last; ++k) {
          const ByteRange& r = ranges[order[k]];
          out[order[k]] = data->substr(r.offset - g.start, r.length);
        }
      }
    };
    size_t workers = std::min<size_t>(
        groups.size(), static_cast<size_t>(std::max(1, client_->config_.max_concurrency_per_host)));
    workers = std::min<size_t>(workers, 8);
    std::vector<std::thread> threads;
    for (size_t t = 1; t < workers; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    if (!first_error.ok()) return first_error;
    return out;
  }

 private:
  RegistryClient* const client_;
  const Reference ref_;
  const oci::Descriptor desc_;
};

std::unique_ptr<BlobReader> RegistryClient::OpenBlob(const Reference& ref,
                                                     const oci::Descriptor& desc) {
  return std::make_unique<RegistryBlobReader>(this, ref, desc);
}

}  // namespace lazypull::registry
