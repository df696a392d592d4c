// Lazy pulls behind a real pull-through cache (issue 21): Debian's docker-registry in proxy
// mode (`proxy: remoteurl:`) in front of a real docker-registry, named as the mirror in the
// daemon's hosts.toml, with the real lazypull-snapshotter mounting eStargz layers lazily.
// FaultProxies without faults in front of both registries count what each one is asked.
//
//  - Node 1 (cold cache): the cache answers range reads of blobs it has not stored with 200 and
//    the whole blob; the daemon abandons those answers and reads the ranges from the upstream,
//    and the mounted tree is exact. The cache is asked for the first layer only while the node
//    mounts (one first request per repository, and a repository the cache refused keeps its
//    other layers on the upstream); the other layers' first requests to the cache are their
//    background fetches' probes. Those abandoned requests are enough for the cache to store
//    every layer blob.
//  - Node 2 (a second daemon with its own root, after the cache stored the blobs): every range
//    is served by the cache with 206; no blob request reaches the upstream; the tree is exact.
#include <sys/stat.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

RemoteTestImages* images = nullptr;

struct BlobRequests {
  int whole = 0;   // GET without Range
  int ranged = 0;  // GET with Range
};
// GETs of blob `digest_hex` among `requests`.
BlobRequests CountBlobGets(const std::vector<RecordedRequest>& requests,
                           const std::string& digest_hex) {
  BlobRequests n;
  for (const RecordedRequest& r : requests) {
    if (r.method != "GET" || !absl::StrContains(r.target, "/blobs/sha256:" + digest_hex)) continue;
    (r.headers.count("range") ? n.ranged : n.whole)++;
  }
  return n;
}

class MirrorCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    images = new RemoteTestImages;
    images->status = BuildRemoteTestImages(*images);
  }
  static void TearDownTestSuite() {
    delete images;
    images = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(images->status.ok()) << images->status;
    auto upstream = FaultProxy::Start(images->registry->port());
    ASSERT_TRUE(upstream.ok());
    upstream_ = std::move(*upstream);
    RegistryOptions cache_options;
    cache_options.proxy_remote_url = "http://" + upstream_->host();
    auto cache = RegistryProcess::Start(tmp_.Sub("cache"), cache_options);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    auto front = FaultProxy::Start(cache_->port());
    ASSERT_TRUE(front.ok());
    cache_front_ = std::move(*front);
    // The registry is named by the upstream's address; the cache is its mirror.
    ASSERT_TRUE(WriteFile(tmp_.Sub("certs.d/" + upstream_->host() + "/hosts.toml"),
                          absl::StrCat("server = \"http://", upstream_->host(),
                                       "\"\n[host.\"http://", cache_front_->host(),
                                       "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"))
                    .ok());
  }
  void TearDown() override {
    mounts_.clear();
    for (auto& d : daemons_) {
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << d->ReadLog();
      EXPECT_TRUE(d->Stop().ok());
    }
    if (HasFailure()) std::cerr << "--- cache log ---\n" << cache_->ReadLog();
  }

  // A daemon (a node) with its own root and chunk cache, default fetch settings except,
  // unless `background`, the background fetch (off, so every range it reads is one a program
  // asked for).
  std::unique_ptr<SnapshotClient> StartNode(const std::string& name, bool background) {
    std::string dir = tmp_.Sub(name);
    ::mkdir(dir.c_str(), 0755);
    SnapshotterOptions options;
    options.config_toml = absl::StrCat("[mount]\nbackend = \"fuse\"\n",
                                       background ? "" : "background_fetch = false\n",
                                       "[registry]\nconfig_path = \"", tmp_.Sub("certs.d"), "\"\n");
    auto d = SnapshotterProcess::Start(dir, options);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return nullptr;
    auto client = std::make_unique<SnapshotClient>((*d)->grpc_target());
    daemons_.push_back(std::move(*d));
    return client;
  }

  // Prepares the image's layers lazily (each must answer ALREADY_EXISTS), mounts an active
  // snapshot on top and returns its directory.
  std::string MountImage(SnapshotClient& client, const PushedImage& image,
                         const std::string& prefix) {
    std::string parent;
    for (size_t i = 0; i < image.resolved.manifest.layers.size(); ++i) {
      std::string target = absl::StrCat(prefix, "-layer-", i);
      grpc::Status s = client.Prepare(absl::StrCat(prefix, "-extract-", i), parent,
                                      StargzLabels(image, i, target));
      EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS)
          << "layer " << i << ": " << s.error_message();
      parent = target;
    }
    MountList mounts;
    grpc::Status s = client.Prepare(prefix + "-container", parent, {}, &mounts);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::string dir = tmp_.Sub("mnt-" + prefix);
    ::mkdir(dir.c_str(), 0755);
    auto m = ScopedMount::Mount(mounts, dir);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) mounts_.push_back(std::move(*m));
    return dir;
  }

  // Whether the cache has stored blob `digest_hex` in its own storage.
  bool CacheStored(const std::string& digest_hex) const {
    return std::filesystem::exists(absl::StrCat(cache_->storage_dir(),
                                                "/docker/registry/v2/blobs/sha256/",
                                                digest_hex.substr(0, 2), "/", digest_hex, "/data"));
  }

  TempDir tmp_{"lpmc"};
  std::unique_ptr<FaultProxy> upstream_;
  std::unique_ptr<RegistryProcess> cache_;
  std::unique_ptr<FaultProxy> cache_front_;
  std::vector<std::unique_ptr<SnapshotterProcess>> daemons_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

TEST_F(MirrorCacheTest, LazyMountsThroughAPullThroughCacheStayLazyAndWarmIt) {
  auto image = ResolvePushed(upstream_->host() + "/esgz:v1");
  ASSERT_TRUE(image.ok()) << image.status();
  const std::vector<oci::Descriptor>& layers = image->resolved.manifest.layers;
  ASSERT_EQ(layers.size(), 4u);
  upstream_->ClearRequests();

  // Node 1, cold cache, with its background fetch (the cache's first request for every layer
  // but the first).
  auto node1 = StartNode("node1", /*background=*/true);
  ASSERT_NE(node1, nullptr);
  std::string dir1 = MountImage(*node1, *image, "n1");
  std::vector<std::string> diffs = CompareTrees(images->rootfs, dir1);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  // The daemon asked the cache for one layer first (the first layer read, its TOC), which
  // could only answer with the whole blob; the ranges of every layer then came from the
  // upstream.
  int asked_first = 0;
  for (const oci::Descriptor& layer : layers) {
    asked_first += CountBlobGets(cache_front_->Requests(), layer.digest.hex()).ranged > 0;
  }
  EXPECT_GE(asked_first, 1);
  for (const oci::Descriptor& layer : layers) {
    EXPECT_GE(CountBlobGets(upstream_->Requests(), layer.digest.hex()).ranged, 1)
        << layer.digest.hex();
  }
  // Those abandoned requests (the first layer's read, the other layers' background probes)
  // were enough for the cache to store every layer.
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const oci::Descriptor& layer : layers) {
          if (!CacheStored(layer.digest.hex())) return false;
        }
        return true;
      },
      std::chrono::seconds(60)));
  const std::vector<RecordedRequest> at_cache = cache_front_->Requests();
  const std::vector<RecordedRequest> at_upstream = upstream_->Requests();
  for (const oci::Descriptor& layer : layers) {
    const std::string hex = layer.digest.hex();
    EXPECT_GE(CountBlobGets(at_cache, hex).ranged, 1) << hex;
    // The cache fetched the whole blob from the upstream to store it.
    EXPECT_GE(CountBlobGets(at_upstream, hex).whole, 1) << hex;
  }
  // Node 1 stops (its background fetch must not be counted below).
  mounts_.clear();
  EXPECT_TRUE(daemons_[0]->Stop().ok());

  // Node 2, warm cache: every range from the cache, nothing from the upstream.
  upstream_->ClearRequests();
  cache_front_->ClearRequests();
  auto node2 = StartNode("node2", /*background=*/false);
  ASSERT_NE(node2, nullptr);
  std::string dir2 = MountImage(*node2, *image, "n2");
  diffs = CompareTrees(images->rootfs, dir2);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  const std::vector<RecordedRequest> warm_cache = cache_front_->Requests();
  const std::vector<RecordedRequest> warm_upstream = upstream_->Requests();
  for (const oci::Descriptor& layer : layers) {
    const std::string hex = layer.digest.hex();
    EXPECT_GE(CountBlobGets(warm_cache, hex).ranged, 1) << hex;
    EXPECT_EQ(CountBlobGets(warm_cache, hex).whole, 0) << hex;
    EXPECT_EQ(CountBlobGets(warm_upstream, hex).ranged + CountBlobGets(warm_upstream, hex).whole, 0)
        << hex;
  }
  // The daemon counts the refused answers of node 1 as mirror fallbacks "no_ranges" and none
  // for node 2 (its log says which mirror and blob).
  EXPECT_TRUE(absl::StrContains(daemons_[0]->ReadLog(),
                                "registry mirror does not serve ranges of this blob yet"));
  EXPECT_FALSE(absl::StrContains(daemons_[1]->ReadLog(),
                                 "registry mirror does not serve ranges of this blob yet"));
}

}  // namespace
}  // namespace lazypull::testing
