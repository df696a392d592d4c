// End-to-end tests of RegistryClient against a real docker-registry on 127.0.0.1: push and
// pull, platform selection, Basic and Bearer auth, injected faults (FaultProxy), hosts.toml
// mirrors, plain HTTP and TLS.
#include "fetcher/registry/registry_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <thread>

#include "fetcher/oci/index.h"
#include "fetcher/oci/media_types.h"
#include "gtest/gtest.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/registry/registry_test_util.h"
#include "tests/registry/token_server.h"

namespace lazypull::testing {
namespace {

using registry::ParseReference;
using registry::Reference;
using registry::RegistryClient;

Reference Ref(const std::string& text) { return *ParseReference(text); }

bool Contains(absl::string_view hay, const std::string& needle) {
  return hay.find(needle) != absl::string_view::npos;
}

// An HttpTransport that records the HTTP version of each exchange.
class RecordingTransport : public registry::HttpTransport {
 public:
  explicit RecordingTransport(std::vector<std::string>* versions)
      : inner_(registry::NewCurlTransport()), versions_(versions) {}
  absl::StatusOr<registry::HttpResponse> Send(const registry::HttpRequest& r) override {
    auto resp = inner_->Send(r);
    if (resp.ok()) versions_->push_back(resp->http_version);
    return resp;
  }

 private:
  std::unique_ptr<registry::HttpTransport> inner_;
  std::vector<std::string>* versions_;
};

class RegistryClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = RegistryProcess::Start(dir_.Sub("reg"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    reg_ = std::move(*reg);
  }
  TempDir dir_{"lazypull-registry-test"};
  std::unique_ptr<RegistryProcess> reg_;
};

TEST_F(RegistryClientTest, PushResolveFetchAndRangeRead) {
  auto config = TestConfig();
  config.upload_chunk_bytes = 64 * 1024;  // exercise chunked PATCH uploads
  auto client = NewClient(config);
  std::string big = RandomBytes(300 * 1024 + 7, 1);
  std::string small = RandomBytes(1000, 2);
  auto img = PushImage(*client, Ref(reg_->host() + "/team/app:v1"), {big, small});
  ASSERT_TRUE(img.ok()) << img.status();

  auto resolved = client->Resolve(Ref(reg_->host() + "/team/app:v1"));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->manifest_descriptor.digest, img->manifest.digest);
  ASSERT_EQ(resolved->manifest.layers.size(), 2u);
  EXPECT_EQ(resolved->manifest.layers[0].digest, Digest::Of(big));
  auto config_blob = client->FetchConfig(resolved->reference, resolved->manifest);
  ASSERT_TRUE(config_blob.ok()) << config_blob.status();
  EXPECT_EQ(config_blob->diff_ids().size(), 2u);

  auto blob = client->FetchBlob(resolved->reference, resolved->manifest.layers[0]);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, big);
  ASSERT_TRUE(client
                  ->FetchBlobToFile(resolved->reference, resolved->manifest.layers[1],
                                    dir_.Sub("small.blob"))
                  .ok());
  EXPECT_EQ(*ReadFile(dir_.Sub("small.blob")), small);

  auto range = client->ReadRange(resolved->reference, img->layers[0], 12345, 4096);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(*range, big.substr(12345, 4096));
  auto past = client->ReadRange(resolved->reference, img->layers[0], big.size() - 1, 2);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kOutOfRange);

  // StreamRanges: docker-registry answers several ranges in ONE multipart/byteranges response.
  auto reader = client->OpenBlob(resolved->reference, img->layers[0]);
  EXPECT_EQ(reader->Size(), big.size());
  uint64_t before = client->stats().requests;
  std::vector<ByteRange> ranges = {{0, 5000}, {5000, 100}, {200000, 10}, {big.size() - 7, 7}};
  std::map<uint64_t, std::string> parts;  // by range offset
  ASSERT_TRUE(reader
                  ->StreamRanges(ranges,
                                 [&](uint64_t off, std::string_view d) {
                                   for (const ByteRange& r : ranges) {
                                     if (off >= r.offset && off < r.end()) {
                                       EXPECT_EQ(off, r.offset + parts[r.offset].size());
                                       parts[r.offset].append(d);
                                     }
                                   }
                                   return absl::OkStatus();
                                 })
                  .ok());
  for (const ByteRange& r : ranges) {
    EXPECT_EQ(parts[r.offset], big.substr(r.offset, r.length)) << r.offset;
  }
  EXPECT_EQ(client->stats().requests - before, 1u);
  EXPECT_EQ(client->MultiRangeSupport(resolved->reference.host), true);

  // Pull by digest; unknown tag is NotFound naming the repository.
  Reference by_digest = Ref(reg_->host() + "/team/app@" + img->manifest.digest.ToString());
  EXPECT_TRUE(client->FetchManifest(by_digest).ok());
  auto missing = client->Resolve(Ref(reg_->host() + "/team/app:nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), "team/app")) << missing.status();

  // Cross-repository mount: the blob appears in another repository without re-upload.
  auto other = Ref(reg_->host() + "/other/app:v1");
  auto reader2 = NewStringBlobReader(big);
  ASSERT_TRUE(client->PushBlob(other, img->layers[0], *reader2, "team/app").ok());
  EXPECT_TRUE(*client->BlobExists(other, img->layers[0].digest));
}

TEST_F(RegistryClientTest, IndexSelectsPlatform) {
  auto client = NewClient(TestConfig());
  oci::Platform host = oci::HostPlatform();
  oci::Platform other{"linux", host.architecture == "arm64" ? "amd64" : "arm64"};
  auto a = PushImage(*client, Ref(reg_->host() + "/multi:host"), {RandomBytes(100, 3)}, host);
  auto b = PushImage(*client, Ref(reg_->host() + "/multi:other"), {RandomBytes(100, 4)}, other);
  ASSERT_TRUE(a.ok() && b.ok());
  oci::Index index;
  index.media_type = std::string(oci::kOciIndex);
  index.manifests = {b->manifest, a->manifest};
  std::string bytes = oci::SerializeIndex(index);
  ASSERT_TRUE(
      client->PushManifest(Ref(reg_->host() + "/multi:latest"), index.media_type, bytes).ok());
  auto r = client->Resolve(Ref(reg_->host() + "/multi:latest"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest_descriptor.digest, a->manifest.digest);
  ASSERT_TRUE(r->index_descriptor.has_value());
  EXPECT_EQ(r->index_descriptor->digest, Digest::Of(bytes));
  r = client->Resolve(Ref(reg_->host() + "/multi:latest"), other);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->manifest_descriptor.digest, b->manifest.digest);
  r = client->Resolve(Ref(reg_->host() + "/multi:latest"), oci::Platform{"linux", "s390x"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST(RegistryAuthTest, BasicAuthFromTomlAndDockerConfig) {
  TempDir dir;
  RegistryOptions opts;
  opts.basic_user = {{"alice", "s3cret-pw"}};
  auto reg = RegistryProcess::Start(dir.Sub("reg"), opts);
  ASSERT_TRUE(reg.ok()) << reg.status();
  auto ref = Ref((*reg)->host() + "/private/app:v1");

  auto anon = NewClient(TestConfig());
  auto denied = anon->Resolve(ref);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kUnauthenticated) << denied.status();
  EXPECT_TRUE(Contains(denied.status().message(), (*reg)->host())) << denied.status();

  auto config = TestConfig();
  config.auths[(*reg)->host()] = {"alice", "s3cret-pw", ""};
  auto client = NewClient(config);
  auto img = PushImage(*client, ref, {RandomBytes(5000, 5)});
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_TRUE(client->Resolve(ref).ok());

  // Same credentials from a docker config.json.
  ASSERT_TRUE(WriteFile(dir.Sub("config.json"), "{\"auths\":{\"" + (*reg)->host() +
                                                    "\":{\"auth\":\"YWxpY2U6czNjcmV0LXB3\"}}}")
                  .ok());
  auto config2 = TestConfig();
  config2.docker_config = dir.Sub("config.json");
  auto client2 = NewClient(config2);
  auto blob = client2->FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, img->layer_bytes[0]);

  // Wrong password: clear error, no secret in it.
  auto config3 = TestConfig();
  config3.auths[(*reg)->host()] = {"alice", "wrong-pw", ""};
  auto st = NewClient(config3)->Resolve(ref).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << st;
  EXPECT_FALSE(Contains(st.message(), "wrong-pw"));
}

TEST(RegistryAuthTest, BearerTokenFlowCachesAndRefreshes) {
  TempDir dir;
  auto tokens = TokenServer::Start(dir.path(), "bob", "tok-pw");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  RegistryOptions opts;
  opts.token = RegistryOptions::Token{(*tokens)->realm(), TokenServer::kService,
                                      TokenServer::kIssuer, (*tokens)->cert_path()};
  auto reg = RegistryProcess::Start(dir.Sub("reg"), opts);
  ASSERT_TRUE(reg.ok()) << reg.status();
  auto ref = Ref((*reg)->host() + "/secure/app:v1");

  ASSERT_TRUE(WriteFile(dir.Sub("config.json"), "{\"auths\":{\"" + (*reg)->host() +
                                                    "\":{\"username\":\"bob\",\"password\":"
                                                    "\"tok-pw\"}}}")
                  .ok());
  auto config = TestConfig();
  config.docker_config = dir.Sub("config.json");
  auto client = NewClient(config);
  auto img = PushImage(*client, ref, {RandomBytes(70000, 6)});
  ASSERT_TRUE(img.ok()) << img.status() << (*reg)->ReadLog();
  auto scopes = (*tokens)->scopes();
  ASSERT_FALSE(scopes.empty());
  EXPECT_EQ(scopes.front(), "repository:secure/app:pull,push");

  // A pull-only client: one token for the pull scope, then cached.
  auto puller = NewClient(config);
  int before = (*tokens)->token_requests();
  auto r = puller->Resolve(ref);
  ASSERT_TRUE(r.ok()) << r.status();
  auto blob = puller->FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, img->layer_bytes[0]);
  auto range = puller->ReadRange(ref, img->layers[0], 100, 200);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(*range, img->layer_bytes[0].substr(100, 200));
  EXPECT_EQ((*tokens)->token_requests() - before, 1);
  EXPECT_EQ((*tokens)->scopes().back(), "repository:secure/app:pull");

  // A token the registry rejects (expired) while the client still thinks it valid: the 401
  // makes the client drop it and fetch a fresh one.
  auto refresher = NewClient(config);
  (*tokens)->IssueExpiredTokens(1);
  before = (*tokens)->token_requests();
  auto again = refresher->FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*tokens)->token_requests() - before, 2);

  // A docker config.json identitytoken: OAuth2 refresh-token POST to the realm.
  (*tokens)->AcceptRefreshToken("refresh-abc");
  ASSERT_TRUE(
      WriteFile(dir.Sub("config-oauth.json"),
                "{\"auths\":{\"" + (*reg)->host() + "\":{\"identitytoken\":\"refresh-abc\"}}}")
          .ok());
  auto oauth_config = TestConfig();
  oauth_config.docker_config = dir.Sub("config-oauth.json");
  auto oauth = NewClient(oauth_config);
  auto via_oauth = oauth->FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(via_oauth.ok()) << via_oauth.status();
  EXPECT_EQ(*via_oauth, img->layer_bytes[0]);
  EXPECT_EQ((*tokens)->oauth_requests(), 1);

  // Bad credentials: PermissionDenied from the token server, naming the realm host.
  auto bad = TestConfig();
  bad.auths[(*reg)->host()] = {"bob", "nope", ""};
  auto st = NewClient(bad)->Resolve(ref).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_FALSE(Contains(st.message(), "nope"));
}

// --- Faults -----------------------------------------------------------------------------

class RegistryFaultTest : public RegistryClientTest {
 protected:
  void SetUp() override {
    RegistryClientTest::SetUp();
    auto direct = NewClient(TestConfig());
    blob_ = RandomBytes(256 * 1024, 9);
    auto img = PushImage(*direct, Ref(reg_->host() + "/fault/app:v1"), {blob_});
    ASSERT_TRUE(img.ok()) << img.status();
    layer_ = img->layers[0];
    auto proxy = FaultProxy::Start(reg_->port());
    ASSERT_TRUE(proxy.ok());
    proxy_ = std::move(*proxy);
    ref_ = Ref(proxy_->host() + "/fault/app:v1");
    client_ = NewClient(TestConfig());
  }
  std::string blob_path() const { return "/blobs/" + layer_.digest.ToString(); }

  std::string blob_;
  oci::Descriptor layer_;
  std::unique_ptr<FaultProxy> proxy_;
  Reference ref_;
  std::unique_ptr<RegistryClient> client_;
};

// A redirect to pre-signed storage carries credentials in its query string: no log line and no
// error message may contain it, even when the storage is unreachable.
TEST_F(RegistryFaultTest, RedirectQueryNeverAppearsInLogsOrErrors) {
  const std::string secret = "X-Amz-Signature=TOPSECRET123&X-Amz-Credential=AKIDSECRET";
  proxy_->AddRule({.kind = FaultKind::kRedirect,
                   .path_contains = blob_path(),
                   .redirect_port = PickFreePort(),  // nothing listens there
                   .redirect_query = secret,
                   .times = -1});
  std::string log_path = dir_.Sub("stderr.log");
  int saved = dup(2);
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  dup2(fd, 2);
  auto data = client_->ReadRange(ref_, layer_, 0, 100);
  auto whole = client_->FetchBlob(ref_, layer_);
  dup2(saved, 2);
  close(saved);
  close(fd);
  ASSERT_FALSE(data.ok());
  ASSERT_FALSE(whole.ok());
  for (const absl::Status& st : {data.status(), whole.status()}) {
    EXPECT_EQ(std::string(st.message()).find("TOPSECRET"), std::string::npos) << st;
    EXPECT_EQ(std::string(st.message()).find("AKIDSECRET"), std::string::npos) << st;
    EXPECT_NE(std::string(st.message()).find("<redacted>"), std::string::npos) << st;
  }
  std::string log = *ReadFile(log_path);
  EXPECT_NE(log.find("retried"), std::string::npos) << "the failures were not logged?";
  EXPECT_EQ(log.find("TOPSECRET"), std::string::npos) << log;
  EXPECT_EQ(log.find("AKIDSECRET"), std::string::npos) << log;
}

TEST_F(RegistryFaultTest, ServerErrorsAreRetried) {
  for (int status : {500, 503}) {
    proxy_->ClearRules();
    proxy_->AddRule(
        {.kind = FaultKind::kStatus, .path_contains = blob_path(), .status = status, .times = 2});
    uint64_t retries = client_->stats().retries;
    auto data = client_->ReadRange(ref_, layer_, 1000, 5000);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(*data, blob_.substr(1000, 5000));
    EXPECT_EQ(client_->stats().retries - retries, 2u);
  }
}

TEST_F(RegistryFaultTest, TooManyRequestsHonoursRetryAfter) {
  proxy_->AddRule({.kind = FaultKind::kStatus,
                   .path_contains = blob_path(),
                   .status = 429,
                   .retry_after = "1",
                   .times = 1});
  auto start = std::chrono::steady_clock::now();
  auto data = client_->ReadRange(ref_, layer_, 0, 100);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_.substr(0, 100));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(950));
}

TEST_F(RegistryFaultTest, DroppedConnectionResumesWithRange) {
  proxy_->AddRule({.kind = FaultKind::kDropMidBody, .path_contains = blob_path(), .times = 1});
  auto data = client_->FetchBlob(ref_, layer_);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_);
  auto reqs = proxy_->Requests();
  ASSERT_GE(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].fault, "drop");
  // The retry asked only for the missing tail.
  ASSERT_TRUE(reqs.back().headers.count("range"));
  EXPECT_TRUE(reqs.back().headers["range"].starts_with("bytes=")) << reqs.back().headers["range"];
  EXPECT_NE(reqs.back().headers["range"], "bytes=0-");
}

TEST_F(RegistryFaultTest, TruncatedBodyIsRetried) {
  proxy_->AddRule({.kind = FaultKind::kTruncateBody, .path_contains = blob_path(), .times = 2});
  auto data = client_->ReadRange(ref_, layer_, 4096, 65536);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_.substr(4096, 65536));
  proxy_->AddRule({.kind = FaultKind::kTruncateBody, .path_contains = blob_path(), .times = 1});
  auto full = client_->FetchBlob(ref_, layer_);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(*full, blob_);
}

TEST_F(RegistryFaultTest, CorruptedByteIsNeverReturned) {
  // Whole blob: digest mismatch → refetched.
  proxy_->AddRule({.kind = FaultKind::kCorruptByte, .path_contains = blob_path(), .times = 1});
  auto data = client_->FetchBlob(ref_, layer_);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_);
  // Always corrupt: DataLoss naming the digest; the file is never created.
  proxy_->AddRule({.kind = FaultKind::kCorruptByte, .path_contains = blob_path(), .times = -1});
  auto st = client_->FetchBlobToFile(ref_, layer_, dir_.Sub("out.blob"));
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_TRUE(Contains(st.message(), layer_.digest.ToString())) << st;
  EXPECT_TRUE(Contains(st.message(), "retried")) << st;
  EXPECT_FALSE(ReadFile(dir_.Sub("out.blob")).ok());
}

TEST_F(RegistryFaultTest, FullBodyAnswerToRangeRequest) {
  proxy_->AddRule({.kind = FaultKind::kIgnoreRange, .path_contains = blob_path(), .times = -1});
  auto data = client_->ReadRange(ref_, layer_, 100000, 777);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_.substr(100000, 777));
  auto tail = client_->ReadRange(ref_, layer_, blob_.size() - 10, 10);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, blob_.substr(blob_.size() - 10));
  EXPECT_EQ(proxy_->faults_applied(), 2);
}

TEST_F(RegistryFaultTest, RedirectToAnotherPortDropsAuthorization) {
  auto storage = FaultProxy::Start(reg_->port());  // stands in for blob storage
  ASSERT_TRUE(storage.ok());
  proxy_->AddRule({.kind = FaultKind::kRequireBasic, .times = -1});
  proxy_->AddRule({.kind = FaultKind::kRedirect,
                   .path_contains = blob_path(),
                   .redirect_port = (*storage)->port(),
                   .times = -1});
  auto config = TestConfig();
  config.auths[proxy_->host()] = {"carol", "pw-carol", ""};
  auto client = NewClient(config);
  auto data = client->ReadRange(ref_, layer_, 10, 20000);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, blob_.substr(10, 20000));
  auto reqs = (*storage)->Requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].headers.count("authorization"), 0u);
  EXPECT_EQ(reqs[0].headers["range"], "bytes=10-20009");
  bool registry_saw_auth = false;
  for (const auto& r : proxy_->Requests()) registry_saw_auth |= r.headers.count("authorization");
  EXPECT_TRUE(registry_saw_auth);
}

TEST_F(RegistryFaultTest, PersistentErrorIsClear) {
  proxy_->AddRule(
      {.kind = FaultKind::kStatus, .path_contains = blob_path(), .status = 500, .times = -1});
  auto st = client_->ReadRange(ref_, layer_, 0, 10).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  for (const std::string& want :
       {proxy_->host(), std::string("fault/app"), layer_.digest.ToString(), std::string("HTTP 500"),
        std::string("retried")}) {
    EXPECT_TRUE(Contains(st.message(), want)) << want << " not in: " << st;
  }
}

TEST_F(RegistryFaultTest, TotalTimeIsBounded) {
  proxy_->AddRule({.kind = FaultKind::kStatus,
                   .path_contains = blob_path(),
                   .status = 503,
                   .retry_after = "1",
                   .times = -1});
  auto config = TestConfig();
  config.max_retries = 100;
  config.total_timeout = std::chrono::milliseconds(2500);
  auto client = NewClient(config);
  auto start = std::chrono::steady_clock::now();
  auto st = client->ReadRange(ref_, layer_, 0, 10).status();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_TRUE(Contains(st.message(), "total time limit 2500 ms")) << st;
  EXPECT_TRUE(Contains(st.message(), "HTTP 503")) << st;
  EXPECT_LT(took, std::chrono::milliseconds(3500));
}

TEST_F(RegistryFaultTest, ConnectionsAreReusedAndCapped) {
  auto config = TestConfig();
  config.max_concurrency_per_host = 2;
  auto client = NewClient(config);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        uint64_t off = (t * 10 + i) * 4000;
        auto d = client->ReadRange(ref_, layer_, off, 4000);
        if (!d.ok() || *d != blob_.substr(off, 4000)) bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_LE(proxy_->connections_accepted(), 4) << "60 requests should reuse <= 2-4 connections";
}

// --- Host configuration ------------------------------------------------------------------

TEST_F(RegistryClientTest, DownMirrorFallsBackToUpstream) {
  auto direct = NewClient(TestConfig());
  auto img = PushImage(*direct, Ref(reg_->host() + "/mirrored/app:v1"), {RandomBytes(999, 10)});
  ASSERT_TRUE(img.ok());
  int dead_port = PickFreePort();  // nothing listens there
  ASSERT_TRUE(WriteFile(dir_.Sub("certs.d/" + reg_->host() + "/hosts.toml"),
                        "server = \"http://" + reg_->host() +
                            "\"\n[host.\"http://127.0.0.1:" + std::to_string(dead_port) +
                            "\"]\n  capabilities = [\"pull\", "
                            "\"resolve\"]\n")
                  .ok());
  auto client = NewClient(TestConfig(dir_.Sub("certs.d")));
  auto ref = Ref(reg_->host() + "/mirrored/app:v1");
  auto r = client->Resolve(ref);
  ASSERT_TRUE(r.ok()) << r.status();
  auto blob = client->FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, img->layer_bytes[0]);
  EXPECT_GE(client->stats().mirror_fallbacks, 2u);
}

TEST_F(RegistryClientTest, HttpServerInHostsTomlMeansPlainHttp) {
  // A registry name that is not localhost: only hosts.toml says it is plain HTTP on 127.0.0.1.
  auto direct = NewClient(TestConfig());
  auto img = PushImage(*direct, Ref(reg_->host() + "/plain/app:v1"), {RandomBytes(2000, 11)});
  ASSERT_TRUE(img.ok());
  ASSERT_TRUE(WriteFile(dir_.Sub("certs.d/registry.example.test/hosts.toml"),
                        "server = \"http://" + reg_->host() + "\"\n")
                  .ok());
  auto client = NewClient(TestConfig(dir_.Sub("certs.d")));
  auto r = client->Resolve(Ref("registry.example.test/plain/app:v1"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest_descriptor.digest, img->manifest.digest);
  // Without hosts.toml the same name is https and fails (and nothing leaves loopback: the
  // name does not resolve).
  auto no_hosts = NewClient(TestConfig(dir_.Sub("empty")));
  EXPECT_FALSE(no_hosts->Resolve(Ref("registry.example.test/plain/app:v1")).ok());
}

TEST(RegistryTlsTest, CustomCaClientCertWrongCaAndSkipVerify) {
  TempDir dir;
  // reg.crt: the registry's self-signed server cert, also the CA that signs client.crt.
  auto gen = RunShell(
      "cd " + dir.path() +
      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout reg.key -out reg.crt -days 2"
      " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>&1"
      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2"
      " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>&1"
      " && openssl req -new -newkey rsa:2048 -nodes -keyout client.key -out client.csr"
      " -subj /CN=lazypull-client 2>&1"
      " && openssl x509 -req -in client.csr -CA reg.crt -CAkey reg.key -CAcreateserial"
      " -out client.crt -days 2 2>&1");
  ASSERT_TRUE(gen.ok() && gen->exit_code == 0) << (gen.ok() ? gen->output : "");
  int port = PickFreePort();
  ASSERT_TRUE(
      WriteFile(dir.Sub("config.yml"),
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
                "    rootdirectory: " +
                    dir.Sub("storage") + "\nhttp:\n  addr: 127.0.0.1:" + std::to_string(port) +
                    "\n  tls:\n    certificate: " + dir.Sub("reg.crt") + "\n    key: " +
                    dir.Sub("reg.key") + "\n    clientcas:\n      - " + dir.Sub("reg.crt") + "\n")
          .ok());
  auto proc = Subprocess::Start({"docker-registry", "serve", dir.Sub("config.yml")},
                                dir.Sub("registry.log"));
  ASSERT_TRUE(proc.ok());
  ASSERT_TRUE(WaitForTcp(port, std::chrono::seconds(20)).ok());
  std::string host = "127.0.0.1:" + std::to_string(port);
  std::string client_line =
      "client = [[\"" + dir.Sub("client.crt") + "\", \"" + dir.Sub("client.key") + "\"]]\n";
  auto hosts_toml = [&](const std::string& extra) {
    return WriteFile(dir.Sub("certs.d/" + host + "/hosts.toml"),
                     "server = \"https://" + host + "\"\n" + extra);
  };
  auto ref = Ref(host + "/tls/app:v1");

  // Right CA and client certificate: push and pull work, over HTTP/2.
  ASSERT_TRUE(hosts_toml("ca = \"reg.crt\"\n" + client_line).ok());
  ASSERT_TRUE(RunShell("cp " + dir.Sub("reg.crt") + " " + dir.Sub("certs.d/" + host + "/")).ok());
  std::vector<std::string> versions;
  RegistryClient client(TestConfig(dir.Sub("certs.d")),
                        std::make_unique<RecordingTransport>(&versions));
  auto img = PushImage(client, ref, {RandomBytes(3000, 12)});
  ASSERT_TRUE(img.ok()) << img.status();
  auto blob = client.FetchBlob(ref, img->layers[0]);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, img->layer_bytes[0]);
  ASSERT_FALSE(versions.empty());
  EXPECT_EQ(versions.back(), "2") << "Go's TLS server offers HTTP/2";

  // No client certificate: refused by the server, error names the host.
  ASSERT_TRUE(hosts_toml("ca = \"reg.crt\"\n").ok());
  auto no_cert = NewClient(TestConfig(dir.Sub("certs.d")))->Resolve(ref);
  EXPECT_FALSE(no_cert.ok());
  EXPECT_TRUE(Contains(no_cert.status().message(), host)) << no_cert.status();

  // Wrong CA: a clear TLS verification error, not retried.
  ASSERT_TRUE(hosts_toml("ca = \"" + dir.Sub("other.crt") + "\"\n" + client_line).ok());
  auto wrong = NewClient(TestConfig(dir.Sub("certs.d")))->Resolve(ref);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition) << wrong.status();
  EXPECT_TRUE(Contains(wrong.status().message(), "TLS")) << wrong.status();
  EXPECT_TRUE(Contains(wrong.status().message(), host)) << wrong.status();
  EXPECT_FALSE(Contains(wrong.status().message(), "retried")) << wrong.status();

  // skip_verify: the server certificate is not checked.
  ASSERT_TRUE(hosts_toml("skip_verify = true\n" + client_line).ok());
  EXPECT_TRUE(NewClient(TestConfig(dir.Sub("certs.d")))->Resolve(ref).ok());
}

}  // namespace
}  // namespace lazypull::testing
