// PullImage against an in-memory registry (a transport answering by URL) and a recording fake
// of containerd's API: the exact calls and labels, and what a failure between two calls leaves
// behind (no image record, active snapshot removed, lease deleted).
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/registry_client.h"
#include "nlohmann/json.hpp"
#include "tools/rpull/image_puller.h"
#include "tools/rpull/pull_progress.h"

namespace lazypull::rpull {
namespace {

Digest D(const std::string& s) { return Digest::Of(s); }

// Serves GET /v2/<repo>/manifests/<ref> and /v2/<repo>/blobs/<digest> from maps.
class MapTransport : public registry::HttpTransport {
 public:
  std::map<std::string, std::pair<std::string, std::string>> manifests;  // ref → (type, bytes)
  std::map<std::string, std::string> blobs;                              // digest → bytes

  absl::StatusOr<registry::HttpResponse> Send(const registry::HttpRequest& r) override {
    registry::HttpResponse resp;
    resp.status = 404;
    auto answer = [&](const std::string& body, const std::string& type) {
      resp.status = 200;
      resp.headers.push_back({"content-type", type});
      resp.headers.push_back({"docker-content-digest", D(body).ToString()});
      resp.headers.push_back({"content-length", std::to_string(body.size())});
      if (r.method == "HEAD") return;
      if (r.body_sink) {
        r.body_sink(resp, body);
      } else {
        resp.body = body;
      }
      resp.body_bytes = body.size();
    };
    const std::string path = r.url.substr(r.url.find("/v2/"));
    if (path == "/v2/") {
      resp.status = 200;
    } else if (size_t m = path.find("/manifests/"); m != std::string::npos) {
      auto it = manifests.find(path.substr(m + 11));
      if (it != manifests.end()) answer(it->second.second, it->second.first);
    } else if (size_t b = path.find("/blobs/"); b != std::string::npos) {
      auto it = blobs.find(path.substr(b + 7));
      if (it != blobs.end()) answer(it->second, "application/octet-stream");
    }
    return resp;
  }
};

// Records every call; answers from scripted state.
class FakeContainerd : public ContainerdApi {
 public:
  std::vector<std::string> calls;
  std::map<std::string, Labels> content;  // digest → labels
  std::set<std::string> committed;        // snapshot names
  std::set<std::string> active;           // snapshot keys
  std::vector<ImageRecord> images;
  std::set<std::string> leases;
  std::map<std::string, Labels> prepare_labels;  // key → labels
  bool lazy = true;                              // Prepare answers ALREADY_EXISTS
  absl::Status apply_error;                      // injected
  std::map<std::string, Digest> diff_ids;        // layer digest → what Apply answers

  absl::Status Connect(std::chrono::milliseconds) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> CreateLease(std::chrono::seconds) override {
    calls.push_back("CreateLease");
    leases.insert("L");
    return std::string("L");
  }
  absl::Status DeleteLease(const std::string& id) override {
    calls.push_back("DeleteLease " + id);
    leases.erase(id);
    return absl::OkStatus();
  }
  void SetLease(std::string id) override { lease_ = std::move(id); }
  absl::StatusOr<Labels> ContentLabels(const Digest& d) override {
    auto it = content.find(d.ToString());
    if (it == content.end()) return absl::NotFoundError(d.ToString());
    return it->second;
  }
  absl::Status SetContentLabels(const Digest& d, const Labels& labels) override {
    calls.push_back("SetContentLabels " + d.ToString());
    for (const auto& [k, v] : labels) content[d.ToString()][k] = v;
    return absl::OkStatus();
  }
  absl::Status WriteContent(const std::string& ref, const oci::Descriptor& desc,
                            const Labels& labels, const BlobProducer& producer) override {
    EXPECT_EQ(lease_, "L") << "content written outside the lease";
    calls.push_back("WriteContent " + desc.digest.ToString());
    std::string data;
    absl::Status st = producer([&](uint64_t off, std::string_view bytes) {
      data.resize(off);
      data.append(bytes);
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    if (D(data) != desc.digest) return absl::FailedPreconditionError("digest mismatch");
    content[desc.digest.ToString()] = labels;
    return absl::OkStatus();
  }
  absl::StatusOr<ImageRecord> GetImage(const std::string& name) override {
    return absl::NotFoundError(name);
  }
  absl::Status PutImage(const ImageRecord& image) override {
    calls.push_back("PutImage " + image.name);
    images.push_back(image);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Mount>> Prepare(const std::string& sn, const std::string& key,
                                             const std::string& parent,
                                             const Labels& labels) override {
    EXPECT_EQ(lease_, "L");
    EXPECT_EQ(sn, "lazypull");
    calls.push_back("Prepare " + key + " parent=" + parent);
    prepare_labels[key] = labels;
    if (lazy) {
      committed.insert(labels.at("containerd.io/snapshot.ref"));
      return absl::AlreadyExistsError("target snapshot exists");
    }
    active.insert(key);
    return std::vector<Mount>{{"bind", "/x/" + key, "", {"rw", "rbind"}}};
  }
  absl::Status Commit(const std::string&, const std::string& name, const std::string& key,
                      const Labels&) override {
    calls.push_back("Commit " + name);
    active.erase(key);
    committed.insert(name);
    return absl::OkStatus();
  }
  absl::StatusOr<Labels> Stat(const std::string&, const std::string& key) override {
    calls.push_back("Stat " + key);
    if (!committed.count(key)) return absl::NotFoundError(key);
    return Labels{};
  }
  absl::Status Remove(const std::string&, const std::string& key) override {
    calls.push_back("Remove " + key);
    active.erase(key);
    return absl::OkStatus();
  }
  absl::StatusOr<Digest> Apply(const oci::Descriptor& layer, const std::vector<Mount>&) override {
    calls.push_back("Apply " + layer.digest.ToString());
    if (!apply_error.ok()) return apply_error;
    return diff_ids.at(layer.digest.ToString());
  }

 private:
  std::string lease_;
};

class PullImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    layers_ = {"layer-one-bytes", "layer-two-bytes"};
    diffs_ = {D("diff-one"), D("diff-two")};
    nlohmann::json config = {
        {"architecture", "amd64"},
        {"os", "linux"},
        {"rootfs",
         {{"type", "layers"}, {"diff_ids", {diffs_[0].ToString(), diffs_[1].ToString()}}}}};
    config_ = config.dump();
    nlohmann::json m = {{"schemaVersion", 2},
                        {"mediaType", oci::kOciManifest},
                        {"config",
                         {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                          {"digest", D(config_).ToString()},
                          {"size", config_.size()}}},
                        {"layers", nlohmann::json::array()}};
    for (size_t i = 0; i < layers_.size(); ++i) {
      m["layers"].push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                             {"digest", D(layers_[i]).ToString()},
                             {"size", layers_[i].size()},
                             {"annotations",
                              {{"containerd.io/snapshot/stargz/toc.digest", D("toc").ToString()},
                               {"org.example.other", "x"}}}});
      transport_->blobs[D(layers_[i]).ToString()] = layers_[i];
      fake_.diff_ids[D(layers_[i]).ToString()] = diffs_[i];
    }
    manifest_ = m.dump();
    transport_->manifests["v1"] = {std::string(oci::kOciManifest), manifest_};
    transport_->blobs[D(config_).ToString()] = config_;
    registry::RegistryConfig rc;
    rc.plain_http.insert("reg.test:5000");
    rc.max_retries = 0;
    client_ = std::make_unique<registry::RegistryClient>(rc, std::move(owned_transport_));
    ref_ = *registry::ParseReference("reg.test:5000/app:v1");
  }

  std::unique_ptr<MapTransport> owned_transport_ = std::make_unique<MapTransport>();
  MapTransport* transport_ = owned_transport_.get();
  std::unique_ptr<registry::RegistryClient> client_;
  registry::Reference ref_;
  FakeContainerd fake_;
  std::vector<std::string> layers_;
  std::vector<Digest> diffs_;
  std::string config_, manifest_;
};

std::string Printed(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

LayerReport Report(LayerOutcome outcome, const std::string& blob, uint64_t downloaded) {
  LayerReport r;
  r.layer.digest = D(blob);
  r.layer.size = 2500000;
  r.outcome = outcome;
  r.bytes_downloaded = downloaded;
  r.seconds = 1.5;
  return r;
}

TEST(PullProgressTest, PlainLinesWithoutATerminal) {
  std::FILE* f = std::tmpfile();
  PullProgress p(f, /*tty=*/false);
  oci::Descriptor m;
  m.digest = D("m");
  p.OnResolved("reg/app:v1", m, 2);
  oci::Descriptor l;
  l.digest = D("a");
  p.OnLayerStart(0, l);
  p.OnLayerBytes(0, 100, 200);
  p.OnLayerDone(0, Report(LayerOutcome::kLazy, "a", 0));
  p.OnLayerStart(1, l);
  p.OnLayerDone(1, Report(LayerOutcome::kDownloaded, "b", 12345678));
  const std::string h0 = D("a").hex().substr(0, 12), h1 = D("b").hex().substr(0, 12);
  EXPECT_EQ(Printed(f), "reg/app:v1: resolved manifest " + m.digest.ToString() +
                            " (2 layers)\nlayer 1/2 sha256:" + h0 +
                            " lazy (2.5 MB compressed, mounted from the registry) in 1.50s\n"
                            "layer 2/2 sha256:" +
                            h1 + " downloaded 12.3 MB in 1.50s\n");
}

TEST(PullProgressTest, ABarRedrawnInPlaceOnATerminal) {
  std::FILE* f = std::tmpfile();
  PullProgress p(f, /*tty=*/true);
  oci::Descriptor m;
  p.OnResolved("reg/app:v1", m, 1);
  oci::Descriptor l;
  l.digest = D("a");
  p.OnLayerStart(0, l);
  p.OnLayerBytes(0, 1000000, 2000000);
  p.OnLayerDone(0, Report(LayerOutcome::kDownloaded, "a", 2000000));
  const std::string out = Printed(f);
  const std::string h = D("a").hex().substr(0, 12);
  EXPECT_TRUE(absl::StrContains(out, "layer 1/1 sha256:" + h + " ...")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\033[Klayer 1/1 sha256:" + h + " downloading [" +
                                         std::string(15, '=') + std::string(15, ' ') +
                                         "] 1.0 MB/2.0 MB"))
      << out;
  EXPECT_TRUE(
      absl::EndsWith(out, "\r\033[Klayer 1/1 sha256:" + h + " downloaded 2.0 MB in 1.50s\n"))
      << out;
}

TEST(HumanBytesTest, PowersOfAThousand) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(999), "999 B");
  EXPECT_EQ(HumanBytes(1000), "1.0 kB");
  EXPECT_EQ(HumanBytes(12345678), "12.3 MB");
  EXPECT_EQ(HumanBytes(3000000000), "3.0 GB");
}

TEST(ChainIdsTest, FollowsTheOciDefinition) {
  Digest a = D("a"), b = D("b"), c = D("c");
  std::vector<Digest> chain = ChainIds({a, b, c});
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(chain[0], a);
  EXPECT_EQ(chain[1], D(a.ToString() + " " + b.ToString()));
  EXPECT_EQ(chain[2], D(chain[1].ToString() + " " + c.ToString()));
  EXPECT_TRUE(ChainIds({}).empty());
}

TEST(ImageLayersLabelTest, JoinsAndStopsAtContainerdsLabelLimit) {
  std::vector<oci::Descriptor> layers(100);
  for (size_t i = 0; i < layers.size(); ++i) layers[i].digest = D(std::to_string(i));
  std::string v = ImageLayersLabel({layers[0], layers[1]});
  EXPECT_EQ(v, layers[0].digest.ToString() + "," + layers[1].digest.ToString());
  std::string all = ImageLayersLabel(layers);
  // 71 bytes per digest + ',': as many whole digests as fit in 4096 with the key.
  const size_t key = std::string("containerd.io/snapshot/cri.image-layers").size();
  EXPECT_LE(key + all.size(), 4096u);
  EXPECT_GT(key + all.size() + 72, 4096u);
  EXPECT_EQ(all.size() % 72, 71u);
}

TEST_F(PullImageTest, LazyLayersGetTheRemoteSnapshotLabelsAndTheImageIsRecordedLast) {
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<Digest> chain = ChainIds(diffs_);
  ASSERT_EQ(result->layers.size(), 2u);
  EXPECT_EQ(result->layers[0].outcome, LayerOutcome::kLazy);
  EXPECT_EQ(result->layers[1].outcome, LayerOutcome::kLazy);
  EXPECT_EQ(result->layers[1].chain_id, chain[1].ToString());
  EXPECT_EQ(result->image_name, "reg.test:5000/app:v1");

  // Labels of the second layer's Prepare.
  ASSERT_EQ(fake_.prepare_labels.size(), 2u);
  Labels second;
  std::string second_key;
  for (const auto& [key, labels] : fake_.prepare_labels) {
    EXPECT_TRUE(absl::StartsWith(key, "extract-")) << key;
    if (absl::EndsWith(key, "-" + chain[1].ToString())) {
      second = labels;
      second_key = key;
    }
  }
  const Labels expected = {{"containerd.io/snapshot.ref", chain[1].ToString()},
                           {"containerd.io/snapshot/cri.image-ref", "reg.test:5000/app:v1"},
                           {"containerd.io/snapshot/cri.manifest-digest", D(manifest_).ToString()},
                           {"containerd.io/snapshot/cri.layer-digest", D(layers_[1]).ToString()},
                           {"containerd.io/snapshot/cri.image-layers", D(layers_[1]).ToString()},
                           {"containerd.io/snapshot/stargz/toc.digest", D("toc").ToString()}};
  EXPECT_EQ(second, expected);

  // Exact call order: content (children first), per layer Stat → Prepare → Stat, GC label
  // on the config, image record, lease deleted.
  std::vector<std::string> want = {"CreateLease", "WriteContent " + D(config_).ToString(),
                                   "WriteContent " + D(manifest_).ToString(),
                                   "Stat " + chain[0].ToString()};
  ASSERT_GE(fake_.calls.size(), want.size());
  EXPECT_EQ(std::vector<std::string>(fake_.calls.begin(), fake_.calls.begin() + 4), want);
  EXPECT_EQ(fake_.calls.back(), "DeleteLease L");
  EXPECT_EQ(fake_.calls[fake_.calls.size() - 2], "PutImage reg.test:5000/app:v1");
  EXPECT_EQ(fake_.calls[fake_.calls.size() - 3], "SetContentLabels " + D(config_).ToString());
  EXPECT_EQ(fake_.content[D(config_).ToString()]["containerd.io/gc.ref.snapshot.lazypull"],
            chain[1].ToString());
  const Labels& ml = fake_.content[D(manifest_).ToString()];
  EXPECT_EQ(ml.at("containerd.io/gc.ref.content.config"), D(config_).ToString());
  EXPECT_EQ(ml.at("containerd.io/gc.ref.content.l.0"), D(layers_[0]).ToString());
  EXPECT_EQ(ml.at("containerd.io/gc.ref.content.l.1"), D(layers_[1]).ToString());
  EXPECT_EQ(ml.at("containerd.io/distribution.source.reg.test:5000"), "app");
  ASSERT_EQ(fake_.images.size(), 1u);
  EXPECT_EQ(fake_.images[0].target.digest, D(manifest_));
  EXPECT_EQ(fake_.images[0].target.media_type, oci::kOciManifest);
  EXPECT_EQ(fake_.images[0].target.size, static_cast<int64_t>(manifest_.size()));
  EXPECT_TRUE(fake_.leases.empty());
}

TEST_F(PullImageTest, NonLazyLayersAreDownloadedAppliedAndCommitted) {
  fake_.lazy = false;
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<Digest> chain = ChainIds(diffs_);
  EXPECT_EQ(result->layers[0].outcome, LayerOutcome::kDownloaded);
  EXPECT_EQ(result->layers[0].bytes_downloaded, layers_[0].size());
  EXPECT_EQ(fake_.committed, (std::set<std::string>{chain[0].ToString(), chain[1].ToString()}));
  EXPECT_TRUE(fake_.active.empty());
  EXPECT_EQ(fake_.content[D(layers_[1]).ToString()]["containerd.io/uncompressed"],
            diffs_[1].ToString());
  EXPECT_EQ(fake_.images.size(), 1u);
}

TEST_F(PullImageTest, AFailedApplyRemovesTheActiveSnapshotAndRecordsNoImage) {
  fake_.lazy = false;
  fake_.apply_error = absl::InternalError("apply exploded");
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(result.status().message(),
            "layer 1 (" + D(layers_[0]).ToString() + "): apply exploded");
  EXPECT_TRUE(fake_.active.empty());
  EXPECT_TRUE(fake_.images.empty());
  EXPECT_TRUE(fake_.leases.empty());
}

TEST_F(PullImageTest, ADiffIdMismatchIsDataLoss) {
  fake_.lazy = false;
  fake_.diff_ids[D(layers_[0]).ToString()] = D("something else");
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(result.status().message(), diffs_[0].ToString()));
  EXPECT_TRUE(fake_.active.empty());
  EXPECT_TRUE(fake_.images.empty());
}

TEST_F(PullImageTest, AlreadyUnpackedLayersAreNotPreparedAgain) {
  std::vector<Digest> chain = ChainIds(diffs_);
  fake_.committed = {chain[0].ToString(), chain[1].ToString()};
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->layers[0].outcome, LayerOutcome::kAlreadyThere);
  EXPECT_TRUE(fake_.prepare_labels.empty());
  EXPECT_EQ(fake_.images.size(), 1u);
}

TEST_F(PullImageTest, ConfigWithWrongLayerCountIsInvalidAndTouchesNothing) {
  nlohmann::json config = nlohmann::json::parse(config_);
  config["rootfs"]["diff_ids"].erase(1);
  config_ = config.dump();
  nlohmann::json m = nlohmann::json::parse(manifest_);
  m["config"]["digest"] = D(config_).ToString();
  m["config"]["size"] = config_.size();
  manifest_ = m.dump();
  transport_->manifests["v1"] = {std::string(oci::kOciManifest), manifest_};
  transport_->blobs[D(config_).ToString()] = config_;
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "image reg.test:5000/app:v1: the manifest has 2 layers but the config lists 1 "
            "diff_ids");
  EXPECT_TRUE(fake_.calls.empty());
}

TEST_F(PullImageTest, AnIndexResolvesToThePlatformAndIsTheImageTarget) {
  // The same manifest listed for arm64, and a decoy for amd64 that does not exist.
  nlohmann::json index = {{"schemaVersion", 2},
                          {"mediaType", oci::kOciIndex},
                          {"manifests",
                           {{{"mediaType", oci::kOciManifest},
                             {"digest", D("missing amd64 manifest").ToString()},
                             {"size", 10},
                             {"platform", {{"architecture", "amd64"}, {"os", "linux"}}}},
                            {{"mediaType", oci::kOciManifest},
                             {"digest", D(manifest_).ToString()},
                             {"size", manifest_.size()},
                             {"platform", {{"architecture", "arm64"}, {"os", "linux"}}}}}}};
  const std::string index_bytes = index.dump();
  transport_->manifests["v1"] = {std::string(oci::kOciIndex), index_bytes};
  transport_->manifests[D(manifest_).ToString()] = {std::string(oci::kOciManifest), manifest_};
  PullOptions options;
  options.platform = *oci::ParsePlatform("linux/arm64");
  auto result = PullImage(fake_, *client_, ref_, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, D(manifest_));
  ASSERT_EQ(fake_.images.size(), 1u);
  EXPECT_EQ(fake_.images[0].target.digest, D(index_bytes));
  EXPECT_EQ(fake_.images[0].target.media_type, oci::kOciIndex);
  EXPECT_EQ(fake_.content[D(index_bytes).ToString()]["containerd.io/gc.ref.content.m.0"],
            D(manifest_).ToString());
  // The manifest's CRI label names it, not the index.
  for (const auto& [key, labels] : fake_.prepare_labels) {
    EXPECT_EQ(labels.at("containerd.io/snapshot/cri.manifest-digest"), D(manifest_).ToString());
  }
}

TEST_F(PullImageTest, UnknownTagIsNotFound) {
  ref_ = *registry::ParseReference("reg.test:5000/app:nope");
  auto result = PullImage(fake_, *client_, ref_, PullOptions{}, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound) << result.status();
  EXPECT_TRUE(absl::StartsWith(result.status().message(), "resolving reg.test:5000/app:nope: "))
      << result.status();
  EXPECT_TRUE(fake_.calls.empty());
}

}  // namespace
}  // namespace lazypull::rpull
