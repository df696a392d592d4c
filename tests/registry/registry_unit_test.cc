// Unit tests of the registry pieces that need no network: references, hosts.toml, config,
// credentials, WWW-Authenticate parsing.
#include "fetcher/oci/media_types.h"
#include "fetcher/registry/authorizer.h"
#include "fetcher/registry/credentials.h"
#include "fetcher/registry/hosts.h"
#include "fetcher/registry/mirror_routes.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "fetcher/registry/registry_config.h"
#include "gtest/gtest.h"
#include "tests/harness/test_env.h"
#include "tests/registry/fake_transport.h"

namespace lazypull::registry {
namespace {

TEST(ReferenceTest, ParsesLikeDocker) {
  auto r = ParseReference("ubuntu");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->host, "docker.io");
  EXPECT_EQ(r->repository, "library/ubuntu");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->ToString(), "docker.io/library/ubuntu:latest");

  r = ParseReference("127.0.0.1:5000/team/app:v1.2@sha256:" + std::string(64, 'c'));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->host, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "v1.2");
  EXPECT_EQ(r->ManifestReference(), "sha256:" + std::string(64, 'c'));

  r = ParseReference("localhost/app");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->host, "localhost");
  r = ParseReference("user/app:3");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->host, "docker.io");
  EXPECT_EQ(r->repository, "user/app");
  r = ParseReference("index.docker.io/library/busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->host, "docker.io");

  for (const char* bad :
       {"", "UPPER/case", "host:5000/app:", "app@sha256:12", "a//b", "ghcr.io/app:bad tag"}) {
    auto st = ParseReference(bad).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(IsLocalhost("127.0.0.1:5000"));
  EXPECT_TRUE(IsLocalhost("localhost"));
  EXPECT_FALSE(IsLocalhost("example.com:5000"));
}

TEST(HostsTomlTest, MirrorsInFileOrderThenUpstream) {
  testing::TempDir dir;
  RegistryConfig c;
  auto hosts = ParseHostsToml(c, "docker.io", R"(
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve"]

[host."https://zz-mirror.example"]
  capabilities = ["pull"]
  ca = "mirror-ca.crt"
  client = [["c.cert", "c.key"]]
  [host."https://zz-mirror.example".header]
    x-test = "1"

[host."http://aa-mirror.example:5000/custom/prefix"]
  override_path = true
  skip_verify = true
)",
                              dir.path());
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[0].ApiRoot(), "https://zz-mirror.example/v2");
  EXPECT_EQ((*hosts)[0].capabilities, static_cast<uint32_t>(kCapPull));
  ASSERT_EQ((*hosts)[0].tls.ca_files.size(), 1u);
  EXPECT_EQ((*hosts)[0].tls.ca_files[0], dir.path() + "/mirror-ca.crt");
  ASSERT_EQ((*hosts)[0].tls.client_pairs.size(), 1u);
  EXPECT_EQ((*hosts)[0].tls.client_pairs[0].second, dir.path() + "/c.key");
  ASSERT_EQ((*hosts)[0].headers.size(), 1u);
  EXPECT_EQ((*hosts)[0].headers[0].first, "x-test");
  EXPECT_EQ((*hosts)[1].ApiRoot(), "http://aa-mirror.example:5000/custom/prefix");
  EXPECT_TRUE((*hosts)[1].tls.skip_verify);
  EXPECT_TRUE((*hosts)[1].mirror);
  EXPECT_EQ((*hosts)[2].ApiRoot(), "https://registry-1.docker.io/v2");
  EXPECT_FALSE((*hosts)[2].mirror);
  EXPECT_EQ((*hosts)[2].capabilities, static_cast<uint32_t>(kCapPull | kCapResolve));

  auto bad =
      ParseHostsToml(c, "x.io", "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n", dir.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("hosts.toml"), std::string::npos) << bad.status();
}

TEST(HostsTomlTest, DefaultsWithoutFiles) {
  testing::TempDir dir;
  RegistryConfig c;
  c.config_path = dir.path();
  auto h = ResolveRegistryHosts(c, "docker.io");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->back().ApiRoot(), "https://registry-1.docker.io/v2");
  h = ResolveRegistryHosts(c, "127.0.0.1:5000");
  EXPECT_EQ(h->back().ApiRoot(), "http://127.0.0.1:5000/v2");
  c.plain_http_localhost = false;
  h = ResolveRegistryHosts(c, "127.0.0.1:5000");
  EXPECT_EQ(h->back().ApiRoot(), "https://127.0.0.1:5000/v2");
  // _default applies to hosts without their own directory.
  ASSERT_TRUE(
      testing::WriteFile(dir.Sub("_default/hosts.toml"), "[host.\"https://mirror.local\"]\n").ok());
  h = ResolveRegistryHosts(c, "quay.io");
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].host, "mirror.local");
  EXPECT_EQ((*h)[1].ApiRoot(), "https://quay.io/v2");
}

TEST(RegistryConfigTest, ParsesSectionStrictly) {
  auto doc = toml::parse(R"(
[registry]
config_path = "/tmp/certs.d"
docker_config = "/tmp/config.json"
plain_http = ["reg.local:5000"]
max_retries = 2
request_timeout_ms = 1500
[registry.auths."reg.local:5000"]
auth = "dTpw"
)");
  auto c = ParseRegistryConfig(*doc["registry"].as_table());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config_path, "/tmp/certs.d");
  EXPECT_EQ(c->max_retries, 2);
  EXPECT_EQ(c->request_timeout.count(), 1500);
  EXPECT_EQ(c->auths.at("reg.local:5000").username, "u");
  EXPECT_EQ(c->auths.at("reg.local:5000").password, "p");
  EXPECT_TRUE(c->plain_http.count("reg.local:5000"));

  auto bad = toml::parse("[registry]\nmax_retries = -1\n");
  auto st = ParseRegistryConfig(*bad["registry"].as_table()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_retries"), std::string::npos);
  auto unknown = toml::parse("[registry]\ncofig_path = \"x\"\n");
  st = ParseRegistryConfig(*unknown["registry"].as_table()).status();
  EXPECT_NE(st.message().find("cofig_path"), std::string::npos);
  auto secret = toml::parse("[registry.auths.\"h\"]\npassword = 7\n");
  st = ParseRegistryConfig(*secret["registry"].as_table()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

TEST(CredentialsTest, DockerConfigAndTomlPrecedence) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::WriteFile(dir.Sub("config.json"), R"({"auths":{
    "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
    "reg.local:5000":{"username":"a","password":"b"},
    "tok.local":{"identitytoken":"refresh-me"}}})")
                  .ok());
  CredentialStore store({{"reg.local:5000", {"toml-user", "toml-pass", ""}}},
                        dir.Sub("config.json"));
  EXPECT_EQ(store.Lookup("docker.io")->username, "hub");
  EXPECT_EQ(store.Lookup("docker.io")->password, "secret");
  EXPECT_EQ(store.Lookup("reg.local:5000")->username, "toml-user");
  EXPECT_EQ(store.Lookup("tok.local")->identity_token, "refresh-me");
  EXPECT_TRUE(store.Lookup("other.io")->empty());
  ASSERT_TRUE(testing::WriteFile(dir.Sub("config.json"), "{\"auths\": [").ok());
  auto st = store.Lookup("other.io").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

TEST(WwwAuthenticateTest, ParsesChallenges) {
  auto c = ParseWwwAuthenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].params["realm"], "https://auth.docker.io/token");
  EXPECT_EQ(c[0].params["scope"], "repository:library/ubuntu:pull,push");
  c = ParseWwwAuthenticate(R"(Basic realm="Registry Realm")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "basic");
  EXPECT_EQ(c[0].params["realm"], "Registry Realm");
}

TEST(RegistryClientFakeTest, RedirectDropsAuthorizationAndRetryAfterIsBounded) {
  RegistryConfig config;
  config.config_path = "";
  config.auths["reg.test:5000"] = {"u", "p", ""};
  config.plain_http.insert("reg.test:5000");
  config.initial_backoff = std::chrono::milliseconds(1);
  config.total_timeout = std::chrono::milliseconds(3000);
  auto transport = std::make_unique<FakeTransport>();
  FakeTransport* fake = transport.get();
  RegistryClient client(config, std::move(transport));
  auto ref = *ParseReference("reg.test:5000/app:v1");
  std::string blob = "0123456789abcdef";
  oci::Descriptor desc;
  desc.media_type = std::string(oci::kOciLayer);
  desc.digest = Digest::Of(blob);
  desc.size = static_cast<int64_t>(blob.size());

  fake->answers.push_back(Resp(401, "", {{"www-authenticate", "Basic realm=\"r\""}}));
  fake->answers.push_back(Resp(307, "", {{"location", "https://storage.test/b?sig=1"}}));
  fake->answers.push_back(Resp(206, blob.substr(2, 5), {{"content-range", "bytes 2-6/16"}}));
  auto data = client.ReadRange(ref, desc, 2, 5);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, "23456");
  ASSERT_EQ(fake->requests.size(), 3u);
  auto has_auth = [](const HttpRequest& r) {
    for (const auto& [k, v] : r.headers) {
      if (k == "Authorization") return true;
    }
    return false;
  };
  EXPECT_EQ(fake->requests[0].url, "http://reg.test:5000/v2/app/blobs/" + desc.digest.ToString());
  EXPECT_FALSE(has_auth(fake->requests[0]));
  EXPECT_TRUE(has_auth(fake->requests[1]));
  EXPECT_EQ(fake->requests[2].url, "https://storage.test/b?sig=1");
  EXPECT_FALSE(has_auth(fake->requests[2]));

  // A wrong Content-Range is retried; a Retry-After beyond the total time limit is not waited.
  fake->requests.clear();
  fake->answers.push_back(Resp(206, blob.substr(0, 4), {{"content-range", "bytes 1-4/16"}}));
  fake->answers.push_back(Resp(429, "", {{"retry-after", "3600"}}));
  auto start = std::chrono::steady_clock::now();
  auto st = client.ReadRange(ref, desc, 0, 4).status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_NE(st.message().find("HTTP 429"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("Content-Range"), absl::string_view::npos) << st;
  EXPECT_EQ(fake->requests.size(), 2u);
  // Every request carried a per-request deadline no longer than the total limit.
  for (const auto& r : fake->requests) EXPECT_LE(r.timeout.count(), 3000);
}

}  // namespace
}  // namespace lazypull::registry

namespace lazypull::registry {
namespace {

// "Later" for a mirror that refused ranges of a blob: 1 s, doubling per refusal up to the cap;
// one probe per retry time; served ranges clear the mark; bad bytes exclude for good.
TEST(MirrorRoutesTest, BackoffProbesOnceAndBadBytesExclude) {
  using std::chrono::milliseconds;
  MirrorRoutes routes({.first_retry = milliseconds(1000), .max_retry = milliseconds(3000)});
  const auto t0 = MirrorRoutes::Clock::now();
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", t0));
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", t0), milliseconds(1000));
  EXPECT_FALSE(routes.RangesAllowed("m:5000", "sha256:a", t0 + milliseconds(999)));
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:b", t0));   // other blobs unaffected
  EXPECT_TRUE(routes.RangesAllowed("other:1", "sha256:a", t0));  // other mirrors too
  // The retry time: one caller probes, the others keep away until its answer.
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", t0 + milliseconds(1000)));
  EXPECT_FALSE(routes.RangesAllowed("m:5000", "sha256:a", t0 + milliseconds(1001)));
  const auto t1 = t0 + milliseconds(1000);
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", t1), milliseconds(2000));
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", t1), milliseconds(3000));
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", t1), milliseconds(3000));  // capped
  routes.MarkRangesServed("m:5000", "sha256:a");
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", t1));
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", t1), milliseconds(1000));  // reset

  // Bad bytes: only the mirrors that delivered bytes overlapping the bad range.
  routes.RecordServed("m:5000", "sha256:c", ByteRange{0, 100});
  routes.RecordServed("n:5000", "sha256:c", ByteRange{100, 100});
  EXPECT_TRUE(routes.ReportBadBytes("sha256:c", ByteRange{500, 10}).empty());
  EXPECT_EQ(routes.ReportBadBytes("sha256:c", ByteRange{50, 10}),
            std::vector<std::string>{"m:5000"});
  EXPECT_FALSE(routes.Trusted("m:5000", "sha256:c"));
  EXPECT_TRUE(routes.Trusted("n:5000", "sha256:c"));
  EXPECT_FALSE(routes.RangesAllowed("m:5000", "sha256:c", t1 + std::chrono::hours(1)));
  routes.MarkRangesServed("m:5000", "sha256:c");  // does not lift a bad-bytes exclusion
  EXPECT_FALSE(routes.Trusted("m:5000", "sha256:c"));
}

// Bulk readers wait for a refusing mirror until its retry time, for at most fill_wait from the
// first refusal, and take its probes meanwhile; served ranges or bad bytes end the wait.
TEST(MirrorRoutesTest, BulkReadersWaitForAFillingMirrorAndTakeItsProbes) {
  using std::chrono::milliseconds;
  MirrorRoutes routes({.first_retry = milliseconds(1000),
                       .max_retry = milliseconds(4000),
                       .fill_wait = milliseconds(5000)});
  const auto t0 = MirrorRoutes::Clock::now();
  const auto at = [&](int ms) { return t0 + milliseconds(ms); };
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", t0), std::nullopt);  // never refused
  EXPECT_FALSE(routes.TakeBulkProbe("m:5000", "sha256:a", t0));
  routes.MarkNoRanges("m:5000", "sha256:a", t0);
  // No bulk reader yet: a program's read probes at the retry time.
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", at(1000)));
  // A bulk reader waits for the next retry time; other blobs and mirrors are not affected.
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(1001)), at(2000));
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:b", at(1001)), std::nullopt);
  EXPECT_EQ(routes.FillingUntil("n:5000", "sha256:a", at(1001)), std::nullopt);
  // At the retry time programs' reads leave the probe to the bulk reader, once.
  EXPECT_FALSE(routes.RangesAllowed("m:5000", "sha256:a", at(2000)));
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(2000)), std::nullopt);
  EXPECT_TRUE(routes.TakeBulkProbe("m:5000", "sha256:a", at(2000)));
  EXPECT_FALSE(routes.TakeBulkProbe("m:5000", "sha256:a", at(2000)));
  // Refused again at 2 s: retry at 4 s, then at 8 s; the wait ends 5 s after the first.
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", at(2000)), milliseconds(2000));
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(2000)), at(4000));
  EXPECT_EQ(routes.MarkNoRanges("m:5000", "sha256:a", at(4000)), milliseconds(4000));
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(4999)), at(8000));
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(5000)), std::nullopt);
  EXPECT_FALSE(routes.TakeBulkProbe("m:5000", "sha256:a", at(8000)));
  // Programs' reads probe again once the bulk reader's turn (one interval) has passed.
  EXPECT_FALSE(routes.RangesAllowed("m:5000", "sha256:a", at(8000)));
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", at(12000)));
  // Served ranges clear the mark.
  routes.MarkRangesServed("m:5000", "sha256:a");
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(13000)), std::nullopt);
  EXPECT_TRUE(routes.RangesAllowed("m:5000", "sha256:a", at(13000)));
  // A mirror excluded for bad bytes is neither waited for nor probed.
  routes.MarkNoRanges("m:5000", "sha256:a", at(13000));
  routes.RecordServed("m:5000", "sha256:a", ByteRange{0, 100});
  routes.ReportBadBytes("sha256:a", ByteRange{0, 10});
  EXPECT_EQ(routes.FillingUntil("m:5000", "sha256:a", at(13000)), std::nullopt);
  EXPECT_FALSE(routes.TakeBulkProbe("m:5000", "sha256:a", at(20000)));
}

TEST(MirrorRoutesTest, MemoryIsBounded) {
  MirrorRoutes routes({.max_blobs = 8});
  const auto now = MirrorRoutes::Clock::now();
  for (int i = 0; i < 100; ++i) routes.MarkNoRanges("m", "sha256:" + std::to_string(i), now);
  // The newest marks survive pruning; the oldest were forgotten (they would cost one probe).
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:99", now));
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:0", now));
}

// A registry WITH the referrers API (docker-registry 2.8, in the e2e tests, has none): the
// artifact type is sent escaped, the answer is filtered again here (the spec lets a registry
// ignore the filter), and AddReferrer leaves the list to the registry (no tag pushed).
TEST(RegistryClientFakeTest, ReferrersApi) {
  RegistryConfig config;
  config.config_path = "";
  config.plain_http.insert("reg.test:5000");
  config.initial_backoff = std::chrono::milliseconds(1);
  auto transport = std::make_unique<FakeTransport>();
  FakeTransport* fake = transport.get();
  RegistryClient client(config, std::move(transport));
  auto ref = *ParseReference("reg.test:5000/app:v1");
  const Digest subject = Digest::Of("manifest");
  const Digest soci = Digest::Of("soci index");
  const Digest sig = Digest::Of("signature");
  const std::string index =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)"
      R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      sig.ToString() +
      R"(","size":9,"artifactType":"application/vnd.example.sig"},)"
      R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      soci.ToString() +
      R"(","size":10,"artifactType":"application/vnd.amazon.soci.index.v1+json"}]})";
  fake->answers.push_back(
      Resp(200, index, {{"content-type", "application/vnd.oci.image.index.v1+json"}}));
  auto r = client.FetchReferrers(ref, subject, "application/vnd.amazon.soci.index.v1+json");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->from_tag_schema);
  ASSERT_EQ(r->manifests.size(), 1u);
  EXPECT_EQ(r->manifests[0].digest, soci);
  ASSERT_EQ(fake->requests.size(), 1u);
  EXPECT_EQ(fake->requests[0].url,
            "http://reg.test:5000/v2/app/referrers/" + subject.ToString() +
                "?artifactType=application%2Fvnd.amazon.soci.index.v1%2Bjson");

  fake->requests.clear();
  fake->answers.push_back(
      Resp(200, index, {{"content-type", "application/vnd.oci.image.index.v1+json"}}));
  oci::Descriptor referrer;
  referrer.media_type = "application/vnd.oci.image.manifest.v1+json";
  referrer.digest = soci;
  referrer.size = 10;
  auto added = client.AddReferrer(ref, subject, referrer);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_FALSE(*added);
  EXPECT_EQ(fake->requests.size(), 1u) << "nothing pushed";

  // Not an index: InvalidArgument.
  fake->answers.push_back(Resp(200, "{\"layers\":[]}"));
  EXPECT_EQ(client.FetchReferrers(ref, subject).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::registry
