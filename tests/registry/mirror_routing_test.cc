// Range reads behind mirrors that are not registries (issue 21), against a real docker-registry
// on 127.0.0.1 as the upstream and a FaultProxy in front of it as the hosts.toml mirror: a
// pull-through cache that answers ranges with 200 + the whole blob, one that answers 206 for
// other bytes, one that serves wrong bytes. Reads stay exact, the refusing mirror costs a
// bounded number of bytes, ranges fall back to the upstream and return to the mirror once it
// serves them; manifests and whole-blob reads still go to the mirror first.
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "fetcher/registry/registry_client.h"
#include "gtest/gtest.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/test_env.h"
#include "tests/registry/registry_test_util.h"

namespace lazypull::testing {
namespace {

using registry::ParseReference;
using registry::Reference;
using registry::RegistryClient;

// Counts, per host, the manifest requests and the requests for one blob (Watch) with the body
// bytes the client's transport received for them: an independent measure of the bytes the
// client read from each host.
class CountingTransport : public registry::HttpTransport {
 public:
  struct Count {
    int blob_requests = 0;
    int manifest_requests = 0;
    uint64_t blob_body_bytes = 0;
  };
  CountingTransport() : inner_(registry::NewCurlTransport()) {}
  absl::StatusOr<registry::HttpResponse> Send(const registry::HttpRequest& r) override {
    auto resp = inner_->Send(r);
    std::string host = r.url.substr(r.url.find("://") + 3);
    host = host.substr(0, host.find('/'));
    std::lock_guard<std::mutex> lock(mu_);
    Count& c = counts_[host];
    if (!blob_.empty() && r.url.find("/blobs/" + blob_) != std::string::npos) {
      ++c.blob_requests;
      if (resp.ok()) c.blob_body_bytes += resp->body_bytes;
    } else if (r.url.find("/manifests/") != std::string::npos) {
      ++c.manifest_requests;
    }
    return resp;
  }
  void Watch(const std::string& digest) {
    std::lock_guard<std::mutex> lock(mu_);
    blob_ = digest;
  }
  Count Get(const std::string& host) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find(host);
    return it == counts_.end() ? Count{} : it->second;
  }

 private:
  std::unique_ptr<registry::HttpTransport> inner_;
  mutable std::mutex mu_;
  std::map<std::string, Count> counts_;
  std::string blob_;
};

// Captures this process's stderr (the JSON log) into a file while alive.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    saved_ = dup(2);
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
  }
  ~StderrCapture() { Stop(); }
  std::string Stop() {
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
    }
    return ReadFile(path_).value_or("");
  }

 private:
  std::string path_;
  int saved_ = -1;
};

constexpr size_t kBlobBytes = 32 << 20;

class MirrorRoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = RegistryProcess::Start(dir_.Sub("reg"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    reg_ = std::move(*reg);
    blob_ = RandomBytes(kBlobBytes, 21);
    ref_ = *ParseReference(reg_->host() + "/cached/app:v1");
    auto img = PushImage(*NewClient(TestConfig()), ref_, {blob_});
    ASSERT_TRUE(img.ok()) << img.status();
    image_ = *img;
    auto mirror = FaultProxy::Start(reg_->port());
    ASSERT_TRUE(mirror.ok());
    mirror_ = std::move(*mirror);
    ASSERT_TRUE(WriteFile(dir_.Sub("certs.d/" + reg_->host() + "/hosts.toml"),
                          "server = \"http://" + reg_->host() + "\"\n[host.\"http://" +
                              mirror_->host() + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
                    .ok());
    auto transport = std::make_unique<CountingTransport>();
    counts_ = transport.get();
    // The probe cycle itself is what these tests check; its wait for a start to be over (no
    // read around the mirror for mirror_start_quiet) is mirror_scope_test's.
    registry::RegistryConfig config = TestConfig(dir_.Sub("certs.d"));
    config.mirror_start_quiet = std::chrono::milliseconds(0);
    client_ = std::make_unique<RegistryClient>(config, std::move(transport));
    counts_->Watch(layer().digest.ToString());
  }
  const oci::Descriptor& layer() const { return image_.layers[0]; }
  std::string blob_path() const { return "/blobs/" + layer().digest.ToString(); }
  // Blob requests the mirror received (as the mirror saw them).
  int MirrorBlobRequests() const {
    int n = 0;
    for (const auto& r : mirror_->Requests()) n += r.target.find(blob_path()) != std::string::npos;
    return n;
  }

  // A mirror whose answers to range reads are refused: reads are exact, the mirror is asked
  // once per blob, what the client read from it is bounded, and the upstream serves the
  // ranges.
  void ExpectRangesRoutedAroundMirror() {
    auto resolved = client_->Resolve(ref_);
    ASSERT_TRUE(resolved.ok()) << resolved.status();
    // Manifests come from the mirror.
    EXPECT_GE(counts_->Get(mirror_->host()).manifest_requests, 1);
    EXPECT_EQ(counts_->Get(reg_->host()).manifest_requests, 0);

    const uint64_t deep = 20 << 20;  // 20 MiB into the layer
    auto data = client_->ReadRange(ref_, layer(), deep, 1000);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(*data, blob_.substr(deep, 1000));
    EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);
    EXPECT_EQ(MirrorBlobRequests(), 1);
    EXPECT_EQ(counts_->Get(reg_->host()).blob_requests, 1);
    // Abandoned at its headers: the client read no body byte from the mirror, and the mirror
    // could hand the kernel only what fits the sockets' buffers, far from the 32 MiB blob.
    EXPECT_EQ(counts_->Get(mirror_->host()).blob_body_bytes, 0u);
    EXPECT_LT(mirror_->body_bytes_sent(), kBlobBytes / 2);

    // More reads of the blob skip the mirror (marked "no ranges" until its retry time).
    std::vector<ByteRange> ranges = {{100, 5000}, {1 << 20, 70000}, {kBlobBytes - 10, 10}};
    std::string got(kBlobBytes, '\0');
    auto reader = client_->OpenBlob(ref_, layer());
    ASSERT_TRUE(reader
                    ->StreamRanges(ranges,
                                   [&](uint64_t off, std::string_view d) {
                                     got.replace(off, d.size(), d);
                                     return absl::OkStatus();
                                   })
                    .ok());
    for (const ByteRange& r : ranges) {
      EXPECT_EQ(got.substr(r.offset, r.length), blob_.substr(r.offset, r.length));
    }
    EXPECT_EQ(MirrorBlobRequests(), 1);
    EXPECT_GE(client_->stats().mirror_skips, 1u);
    EXPECT_EQ(counts_->Get(mirror_->host()).blob_body_bytes, 0u);

    // A whole-blob read still goes to the mirror first (it is what fills a cache).
    auto config = client_->FetchBlob(ref_, image_.config);
    ASSERT_TRUE(config.ok()) << config.status();
    int config_from_mirror = 0;
    for (const auto& r : mirror_->Requests()) {
      config_from_mirror += r.target.find(image_.config.digest.ToString()) != std::string::npos;
    }
    EXPECT_EQ(config_from_mirror, 1);

    // Once the mirror serves ranges (the cache stored the blob), the next probe after the
    // backoff finds it, and the ranges come from it again.
    mirror_->ClearRules();
    const int upstream_before = counts_->Get(reg_->host()).blob_requests;
    int reads = 0;
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto d = client_->ReadRange(ref_, layer(), 4096 + reads, 100);
          ++reads;
          EXPECT_TRUE(d.ok() && *d == blob_.substr(4096 + reads - 1, 100));
          return counts_->Get(mirror_->host()).blob_body_bytes > 0;
        },
        std::chrono::seconds(30)));
    const int upstream_after_probe = counts_->Get(reg_->host()).blob_requests;
    EXPECT_EQ(upstream_after_probe - upstream_before, reads - 1);
    auto again = client_->ReadRange(ref_, layer(), 12345, 6789);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, blob_.substr(12345, 6789));
    EXPECT_EQ(counts_->Get(reg_->host()).blob_requests, upstream_after_probe);
  }

  TempDir dir_{"lazypull-mirror-test"};
  std::unique_ptr<RegistryProcess> reg_;
  std::string blob_;
  Reference ref_;
  PushedImage image_;
  std::unique_ptr<FaultProxy> mirror_;
  CountingTransport* counts_ = nullptr;
  std::unique_ptr<RegistryClient> client_;
};

// distribution's proxy before it stored the blob: 200 and the whole blob for a Range request.
TEST_F(MirrorRoutingTest, MirrorAnsweringRangesWithTheWholeBlobIsRoutedAround) {
  mirror_->AddRule({.kind = FaultKind::kIgnoreRange, .path_contains = blob_path(), .times = -1});
  StderrCapture log(dir_.Sub("stderr.log"));
  ExpectRangesRoutedAroundMirror();
  std::string text = log.Stop();
  EXPECT_NE(text.find("\"msg\":\"registry mirror does not serve ranges of this blob yet"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("answered HTTP 200 (the whole blob)"), std::string::npos) << text;
}

// While the mirror refuses ranges of the blob, a reader's bulk reads are asked to wait for its
// retry time (the background fetch then does not read the upstream) and the bulk reader
// probes the mirror itself, so a program's read at the retry time goes to the upstream
// without a refused probe; once the mirror serves ranges, nobody waits and ranges come from it.
TEST_F(MirrorRoutingTest, BulkReadsWaitWhileTheMirrorFillsAndProbeIt) {
  auto reader = client_->OpenBlob(ref_, layer());
  EXPECT_EQ(reader->BulkReadsReadyAt(), std::nullopt);
  mirror_->AddRule({.kind = FaultKind::kIgnoreRange, .path_contains = blob_path(), .times = -1});
  const auto before = std::chrono::steady_clock::now();
  auto data = reader->ReadAt(1 << 20, 1000);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_.substr(1 << 20, 1000));
  EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);
  std::optional<std::chrono::steady_clock::time_point> ready = reader->BulkReadsReadyAt();
  ASSERT_TRUE(ready.has_value());
  // The first retry time: 1 s after the refusal.
  EXPECT_GT(*ready, before + std::chrono::milliseconds(1000));
  EXPECT_LE(*ready, std::chrono::steady_clock::now() + std::chrono::milliseconds(1000));
  // Another blob of the image is not affected.
  EXPECT_EQ(client_->OpenBlob(ref_, image_.config)->BulkReadsReadyAt(), std::nullopt);

  // The retry time: a program's read does not probe (the bulk reader does), it reads the
  // upstream at once.
  ASSERT_TRUE(WaitUntil([&] { return std::chrono::steady_clock::now() >= *ready; }));
  const int upstream_before = counts_->Get(reg_->host()).blob_requests;
  auto read = reader->ReadAt(8192, 100);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, blob_.substr(8192, 100));
  EXPECT_EQ(MirrorBlobRequests(), 1);
  EXPECT_EQ(counts_->Get(reg_->host()).blob_requests, upstream_before + 1);
  // The bulk reader's probe: refused (abandoned at its headers), wait for the next retry.
  std::optional<std::chrono::steady_clock::time_point> next = reader->BulkReadsReadyAt();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, *ready);
  EXPECT_EQ(MirrorBlobRequests(), 2);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 2u);
  EXPECT_EQ(counts_->Get(mirror_->host()).blob_body_bytes, 0u);

  // The cache stored the blob: the next probe is served, nobody waits, ranges come from it.
  mirror_->ClearRules();
  ASSERT_TRUE(WaitUntil([&] { return std::chrono::steady_clock::now() >= *next; }));
  EXPECT_EQ(reader->BulkReadsReadyAt(), std::nullopt);
  EXPECT_EQ(MirrorBlobRequests(), 3);
  auto served = reader->ReadAt(4096, 100);
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(*served, blob_.substr(4096, 100));
  EXPECT_EQ(MirrorBlobRequests(), 4);
  EXPECT_EQ(counts_->Get(reg_->host()).blob_requests, upstream_before + 1);
  EXPECT_EQ(reader->BulkReadsReadyAt(), std::nullopt);
}

// A mirror that answers 206, but for other bytes than asked.
TEST_F(MirrorRoutingTest, MirrorAnsweringAnotherRangeIsRoutedAround) {
  mirror_->AddRule({.kind = FaultKind::kWrongRange, .path_contains = blob_path(), .times = -1});
  StderrCapture log(dir_.Sub("stderr.log"));
  ExpectRangesRoutedAroundMirror();
  std::string text = log.Stop();
  EXPECT_NE(text.find("answered 206 with Content-Range"), std::string::npos) << text;
}

// A mirror that holds other bytes under the digest: once a chunk from it fails verification
// (reported through the BlobReader), it is not used for that blob again, ranges or whole.
TEST_F(MirrorRoutingTest, MirrorServingWrongBytesIsSkippedForThatBlob) {
  mirror_->AddRule({.kind = FaultKind::kCorruptByte, .path_contains = blob_path(), .times = -1});
  auto reader = client_->OpenBlob(ref_, layer());
  const uint64_t off = 3 << 20, len = 64 << 10;
  auto bad = reader->ReadAt(off, len);
  ASSERT_TRUE(bad.ok()) << bad.status();
  ASSERT_NE(*bad, blob_.substr(off, len)) << "the mirror was meant to flip a byte";
  EXPECT_EQ(MirrorBlobRequests(), 1);
  // A report for bytes the mirror did not deliver blames nobody.
  EXPECT_FALSE(reader->ReportCorruption(off + len, 10));

  StderrCapture log(dir_.Sub("stderr.log"));
  EXPECT_TRUE(reader->ReportCorruption(off + 100, 1000));
  std::string text = log.Stop();
  EXPECT_NE(text.find("\"msg\":\"registry mirror served bytes that failed verification"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\"mirror\":\"" + mirror_->host() + "\""), std::string::npos) << text;
  EXPECT_NE(text.find(layer().digest.ToString()), std::string::npos) << text;
  EXPECT_EQ(client_->stats().mirror_bad_bytes, 1u);

  auto good = reader->ReadAt(off, len);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(*good, blob_.substr(off, len));
  auto whole = client_->FetchBlob(ref_, layer(), kBlobBytes);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, blob_);
  EXPECT_EQ(MirrorBlobRequests(), 1);
}

}  // namespace
}  // namespace lazypull::testing
