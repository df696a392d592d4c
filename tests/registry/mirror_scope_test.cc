// Which host gets which blob request while a pull-through cache is cold, filling or warm
// (issue 21; label unit): MirrorRoutes' cold scopes, and RegistryClient against a scripted
// transport with a hosts.toml that names a mirror before the registry. Once the cache refused
// ranges of one blob of a repository, the other blobs of it this node has not asked yet are
// read from the registry at once, and the cache's first request for them is the background
// fetch's probe, sent once the repository's reads paused (its start is over); a warm cache
// gets every request.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "fetcher/oci/media_types.h"
#include "fetcher/registry/mirror_routes.h"
#include "fetcher/registry/registry_client.h"
#include "gtest/gtest.h"
#include "tests/harness/test_env.h"
#include "tests/registry/fake_transport.h"

namespace lazypull::registry {
namespace {

using std::chrono::milliseconds;

TEST(MirrorScopeTest, FirstRequestAndColdScopeKeepUnaskedBlobsAway) {
  MirrorRoutes routes({.first_retry = milliseconds(1000),
                       .max_retry = milliseconds(4000),
                       .scope_cold_wait = milliseconds(10000),
                       .first_request_wait = milliseconds(5000),
                       .first_request_gather = milliseconds(0)});
  const auto t0 = MirrorRoutes::Clock::now();
  const auto at = [&](int ms) { return t0 + milliseconds(ms); };
  bool first = false;
  // The scope's first request to the mirror; until its answer, the scope's other blobs not
  // answered yet go elsewhere. Other scopes and mirrors have their own.
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:a", t0, "reg/r", &first));
  EXPECT_TRUE(first);
  first = false;
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:b", at(1), "reg/r", &first));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:a", at(1), "reg/r", &first));
  EXPECT_FALSE(first);
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:b", at(1), "reg/other", &first));
  EXPECT_TRUE(first);
  routes.EndFirstRequest("m", "reg/other");
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:b", at(1)));  // no scope given: as before
  // Served: the scope is warm; each blob not asked yet is the first request of its moment.
  routes.MarkRangesServed("m", "sha256:a");
  routes.EndFirstRequest("m", "reg/r");
  first = false;
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:a", at(2), "reg/r", &first));
  EXPECT_FALSE(first);
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:b", at(2), "reg/r", &first));
  EXPECT_TRUE(first);
  routes.MarkRangesServed("m", "sha256:b");
  routes.EndFirstRequest("m", "reg/r");
  EXPECT_FALSE(routes.TakeBulkProbe("m", "sha256:x", at(2), "reg/r"));  // warm: no probes

  // The mirror refuses ranges of c: the scope is cold.
  EXPECT_EQ(routes.MarkNoRanges("m", "sha256:c", at(3), "reg/r"), milliseconds(1000));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:d", at(4), "reg/r"));
  EXPECT_TRUE(routes.RangesAllowed("n", "sha256:d", at(4), "reg/r"));  // other mirror
  routes.EndFirstRequest("n", "reg/r");
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:a", at(4), "reg/r"));  // served before

  // A bulk reader's probe is the mirror's first request for d, taken once.
  EXPECT_EQ(routes.FillingUntil("m", "sha256:d", at(4)), std::nullopt);
  EXPECT_TRUE(routes.TakeBulkProbe("m", "sha256:d", at(4), "reg/r"));
  EXPECT_FALSE(routes.TakeBulkProbe("m", "sha256:d", at(5), "reg/r"));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:d", at(5), "reg/r"));
  // Refused: a first refusal (retry in 1 s) the bulk reader waits for; programs keep away.
  EXPECT_EQ(routes.MarkNoRanges("m", "sha256:d", at(6), "reg/r"), milliseconds(1000));
  EXPECT_EQ(routes.FillingUntil("m", "sha256:d", at(7)), at(1006));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:d", at(1006), "reg/r"));  // bulk's turn
  EXPECT_TRUE(routes.TakeBulkProbe("m", "sha256:d", at(1006), "reg/r"));
  EXPECT_EQ(routes.MarkNoRanges("m", "sha256:d", at(1006), "reg/r"), milliseconds(2000));

  // e: the first probe is served (the mirror had it): ranges of e go to the mirror.
  EXPECT_TRUE(routes.TakeBulkProbe("m", "sha256:e", at(8), "reg/r"));
  routes.MarkRangesServed("m", "sha256:e");
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:e", at(9), "reg/r"));
  EXPECT_FALSE(routes.TakeBulkProbe("m", "sha256:e", at(9), "reg/r"));

  // The scope stays cold scope_cold_wait after its last refusal (d's, at 1006 ms).
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:f", at(11005), "reg/r"));
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:f", at(11006), "reg/r", &first));
  EXPECT_TRUE(first);
  EXPECT_FALSE(routes.TakeBulkProbe("m", "sha256:g", at(11006), "reg/r"));
  // A first request never ended keeps the others away for first_request_wait only.
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:g", at(16005), "reg/r"));
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:g", at(16006), "reg/r"));
}

// While a cold scope's reads go around the mirror (a container starting), the mirror is not
// probed: bulk readers wait until the reads paused for start_quiet (at most start_defer_max
// after the burst's first read), and a program's read at a retry time goes around too.
TEST(MirrorScopeTest, ProbesWaitForTheScopesStart) {
  MirrorRoutes routes({.first_retry = milliseconds(1000),
                       .max_retry = milliseconds(4000),
                       .scope_cold_wait = milliseconds(60000),
                       .first_request_wait = milliseconds(5000),
                       .start_quiet = milliseconds(3000),
                       .start_defer_max = milliseconds(10000)});
  const auto t0 = MirrorRoutes::Clock::now();
  const auto at = [&](int ms) { return t0 + milliseconds(ms); };
  EXPECT_EQ(routes.MarkNoRanges("m", "sha256:a", t0, "reg/r"), milliseconds(1000));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:b", at(100), "reg/r"));  // around: the start
  // b never asked, a refused (retry at 1000): both wait for 3 s without a read around.
  EXPECT_EQ(routes.FillingUntil("m", "sha256:b", at(200), "reg/r"), at(3100));
  EXPECT_EQ(routes.FillingUntil("m", "sha256:a", at(200), "reg/r"), at(3100));
  EXPECT_EQ(routes.FillingUntil("m", "sha256:b", at(200)), std::nullopt);  // no scope: as before
  EXPECT_EQ(routes.FillingUntil("m", "sha256:b", at(200), "reg/other"), std::nullopt);
  // A program's read of a after its retry time: the bulk reader's turn (until 3100 + 1000), and
  // the read extends the start.
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:a", at(1500), "reg/r"));
  EXPECT_EQ(routes.FillingUntil("m", "sha256:a", at(1600), "reg/r"), at(4500));
  // c, refused with no bulk reader waiting: a program's read at its retry time does not probe
  // during the start, the first read after 3 s of quiet does.
  EXPECT_EQ(routes.MarkNoRanges("m", "sha256:c", at(1600), "reg/r"), milliseconds(1000));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:c", at(2700), "reg/r"));
  EXPECT_FALSE(routes.RangesAllowed("m", "sha256:c", at(5699), "reg/r"));
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:c", at(8699), "reg/r"));
  // Past the start the bulk reader probes at once (b: its first request, taken once).
  EXPECT_EQ(routes.FillingUntil("m", "sha256:b", at(8700), "reg/r"), std::nullopt);
  EXPECT_TRUE(routes.TakeBulkProbe("m", "sha256:b", at(8700), "reg/r"));
  // Reads around without a 3 s pause defer probes at most 10 s from the burst's first read.
  for (int ms = 12000; ms <= 21000; ms += 1000) {
    EXPECT_FALSE(routes.RangesAllowed("m", "sha256:d", at(ms), "reg/r"));
  }
  EXPECT_EQ(routes.FillingUntil("m", "sha256:d", at(21500), "reg/r"), at(22000));
  EXPECT_EQ(routes.FillingUntil("m", "sha256:d", at(22000), "reg/r"), std::nullopt);

  // start_quiet 0: no wait.
  MirrorRoutes eager({.start_quiet = milliseconds(0)});
  EXPECT_EQ(eager.MarkNoRanges("m", "sha256:a", t0, "reg/r"), milliseconds(1000));
  EXPECT_FALSE(eager.RangesAllowed("m", "sha256:b", at(100), "reg/r"));
  EXPECT_EQ(eager.FillingUntil("m", "sha256:b", at(200), "reg/r"), std::nullopt);
  EXPECT_TRUE(eager.RangesAllowed("m", "sha256:a", at(1000), "reg/r"));
}

// Reads of a scope's blobs arriving together gather; the smallest digest becomes the first
// request whichever arrived first, so every node asks a cold cache for the same blob.
TEST(MirrorScopeTest, FirstRequestIsTheSmallestDigestOfTheReadsArrivingTogether) {
  MirrorRoutes routes({.scope_cold_wait = milliseconds(60000),
                       .first_request_wait = std::chrono::minutes(1),
                       .first_request_gather = milliseconds(2000)});
  const auto t0 = MirrorRoutes::Clock::now();
  bool first_b = false;
  std::thread b(
      [&] { EXPECT_FALSE(routes.RangesAllowed("m", "sha256:b", t0, "reg/r", &first_b)); });
  std::this_thread::sleep_for(milliseconds(100));  // b gathers (its window is 2 s)
  bool first_a = false;
  // a arrives at the end of b's window: the smallest digest goes out.
  EXPECT_TRUE(routes.RangesAllowed("m", "sha256:a", t0 + milliseconds(2000), "reg/r", &first_a));
  EXPECT_TRUE(first_a);
  // Refused: b goes around (the scope is cold).
  routes.MarkNoRanges("m", "sha256:a", t0 + milliseconds(2000), "reg/r");
  routes.EndFirstRequest("m", "reg/r");
  b.join();
  EXPECT_FALSE(first_b);
}

// A FakeTransport that runs `before` (once) when the next request is sent, before answering
// it: what the client does while a request is out.
class HookTransport : public FakeTransport {
 public:
  std::function<void()> before;
  absl::StatusOr<HttpResponse> Send(const HttpRequest& r) override {
    if (before) {
      std::function<void()> f = std::move(before);
      before = nullptr;
      f();
    }
    return FakeTransport::Send(r);
  }
};

// A client whose hosts.toml names cache.test as the mirror of reg.test:5000, two blobs of one
// repository, and a scripted transport.
class MirrorScopeClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(testing::WriteFile(dir_.Sub("reg.test:5000/hosts.toml"),
                                   "server = \"http://reg.test:5000\"\n"
                                   "[host.\"http://cache.test:5000\"]\n"
                                   "  capabilities = [\"pull\", \"resolve\"]\n")
                    .ok());
    for (int i = 0; i < 2; ++i) {
      blobs_[i] = std::string(64, static_cast<char>('a' + i)) + "0123456789";
      descs_[i].media_type = std::string(oci::kOciLayer);
      descs_[i].digest = Digest::Of(blobs_[i]);
      descs_[i].size = static_cast<int64_t>(blobs_[i].size());
    }
    NewClient();
  }

  // `start_quiet`: RegistryConfig::mirror_start_quiet (0 = probes never wait for a start).
  void NewClient(milliseconds start_quiet = milliseconds(0)) {
    RegistryConfig config;
    config.config_path = dir_.path();
    config.initial_backoff = milliseconds(1);
    config.mirror_start_quiet = start_quiet;
    auto transport = std::make_unique<HookTransport>();
    fake_ = transport.get();
    client_ = std::make_unique<RegistryClient>(config, std::move(transport));
  }

  // The whole blob with 200: what a cold pull-through cache answers to a range request.
  HttpResponse Whole(int i) const { return Resp(200, blobs_[i]); }
  HttpResponse Part(int i, uint64_t off, uint64_t len) const {
    return Resp(
        206, blobs_[i].substr(off, len),
        {{"content-range", "bytes " + std::to_string(off) + "-" + std::to_string(off + len - 1) +
                               "/" + std::to_string(blobs_[i].size())}});
  }

  // Requests sent so far: to the cache, to the registry (blob requests of blob i).
  int To(const std::string& host, int i) const {
    int n = 0;
    const std::string prefix = "http://" + host + "/v2/app/blobs/" + descs_[i].digest.ToString();
    for (const HttpRequest& r : fake_->requests) n += r.url.rfind(prefix, 0) == 0;
    return n;
  }

  void ExpectRead(int i, uint64_t off, uint64_t len) {
    auto data = client_->ReadRange(ref_, descs_[i], off, len);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(*data, blobs_[i].substr(off, len));
  }

  testing::TempDir dir_;
  Reference ref_ = *ParseReference("reg.test:5000/app:v1");
  std::string blobs_[2];
  oci::Descriptor descs_[2];
  HookTransport* fake_ = nullptr;
  std::unique_ptr<RegistryClient> client_;
};

TEST_F(MirrorScopeClientTest, ColdCache) {
  // Blob 0's first read (a TOC) asks the cache, which answers the whole blob: abandoned at
  // its headers, the registry answers.
  fake_->answers = {Whole(0), Part(0, 60, 10)};
  ExpectRead(0, 60, 10);
  EXPECT_EQ(To("cache.test:5000", 0), 1);
  EXPECT_EQ(To("reg.test:5000", 0), 1);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);

  // Blob 1, never asked: its reads go to the registry at once (no refused request, no copy
  // started by a program's read).
  fake_->answers = {Part(1, 0, 8), Part(1, 8, 8)};
  ExpectRead(1, 0, 8);
  ExpectRead(1, 8, 8);
  EXPECT_EQ(To("cache.test:5000", 1), 0);
  EXPECT_EQ(To("reg.test:5000", 1), 2);
  EXPECT_EQ(client_->stats().mirror_skips, 2u);

  // The background fetch's first request for blob 1 is its probe of the cache: refused, it
  // waits for the cache's retry time, and programs' reads still go to the registry.
  fake_->answers = {Whole(1)};
  const auto before = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> ready =
      client_->MirrorReadyAt(ref_, descs_[1]);
  ASSERT_TRUE(ready.has_value());
  EXPECT_GE(*ready, before + milliseconds(1000));
  EXPECT_EQ(To("cache.test:5000", 1), 1);
  EXPECT_EQ(fake_->RequestHeader(fake_->requests.size() - 1, "Range"), "bytes=0-73");
  EXPECT_EQ(client_->stats().mirror_range_refusals, 2u);
  fake_->answers = {Part(1, 30, 4)};
  ExpectRead(1, 30, 4);
  EXPECT_EQ(To("cache.test:5000", 1), 1);
  EXPECT_EQ(To("reg.test:5000", 1), 3);
}

// While the reads of a cold cache's repository go to the registry (a container starting),
// the background fetch does not probe the cache: it is told to wait for the reads to pause.
TEST_F(MirrorScopeClientTest, ColdCacheIsNotProbedDuringTheStart) {
  NewClient(std::chrono::hours(1));
  fake_->answers = {Whole(0), Part(0, 60, 10), Part(1, 0, 8)};
  ExpectRead(0, 60, 10);
  ExpectRead(1, 0, 8);
  const size_t sent = fake_->requests.size();
  const auto before = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) {
    std::optional<std::chrono::steady_clock::time_point> ready =
        client_->MirrorReadyAt(ref_, descs_[i]);
    ASSERT_TRUE(ready.has_value());
    EXPECT_GE(*ready, before + std::chrono::seconds(29));  // start_defer_max: 30 s
  }
  EXPECT_EQ(fake_->requests.size(), sent);
  EXPECT_EQ(To("cache.test:5000", 0), 1);
  EXPECT_EQ(To("cache.test:5000", 1), 0);
  EXPECT_EQ(To("reg.test:5000", 0), 1);
  EXPECT_EQ(To("reg.test:5000", 1), 1);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);
}

// The layers of a container are opened at once: while the cache's answer to the first request
// is out, the other layer's reads go to the registry; refused, they stay there.
TEST_F(MirrorScopeClientTest, ColdCacheIsSentOneRequestWhileItsAnswerIsOut) {
  fake_->before = [&] { ExpectRead(1, 0, 8); };  // while blob 0's request to the cache is out
  fake_->answers = {Part(1, 0, 8), Whole(0), Part(0, 60, 10)};
  ExpectRead(0, 60, 10);
  EXPECT_EQ(To("cache.test:5000", 0), 1);
  EXPECT_EQ(To("reg.test:5000", 0), 1);
  EXPECT_EQ(To("cache.test:5000", 1), 0);
  EXPECT_EQ(To("reg.test:5000", 1), 1);
  fake_->answers = {Part(1, 8, 8)};
  ExpectRead(1, 8, 8);
  EXPECT_EQ(To("cache.test:5000", 1), 0);
  EXPECT_EQ(To("reg.test:5000", 1), 2);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);
}

// Warm: the same read goes to the registry while the first answer is out (milliseconds from
// a cache near the node), and to the cache once it answered.
TEST_F(MirrorScopeClientTest, WarmCacheGetsTheOtherLayerOnceTheFirstAnswerIsIn) {
  fake_->before = [&] { ExpectRead(1, 0, 8); };
  fake_->answers = {Part(1, 0, 8), Part(0, 60, 10)};
  ExpectRead(0, 60, 10);
  fake_->answers = {Part(1, 8, 8)};
  ExpectRead(1, 8, 8);
  EXPECT_EQ(To("cache.test:5000", 0), 1);
  EXPECT_EQ(To("reg.test:5000", 0), 0);
  EXPECT_EQ(To("cache.test:5000", 1), 1);
  EXPECT_EQ(To("reg.test:5000", 1), 1);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 0u);
}

TEST_F(MirrorScopeClientTest, FillingCacheThatHasTheBlobServesItAfterTheBulkProbe) {
  fake_->answers = {Whole(0), Part(0, 0, 4)};
  ExpectRead(0, 0, 4);
  // The cache already holds blob 1 (stored for another node): the bulk reader's probe is
  // answered with the range, nobody waits, and every read of blob 1 goes to the cache.
  fake_->answers = {Part(1, 0, 74)};
  EXPECT_EQ(client_->MirrorReadyAt(ref_, descs_[1]), std::nullopt);
  fake_->answers = {Part(1, 10, 20), Part(1, 40, 5)};
  ExpectRead(1, 10, 20);
  ExpectRead(1, 40, 5);
  EXPECT_EQ(To("cache.test:5000", 1), 3);
  EXPECT_EQ(To("reg.test:5000", 1), 0);
  EXPECT_EQ(client_->stats().mirror_range_refusals, 1u);
}

TEST_F(MirrorScopeClientTest, WarmCacheGetsEveryRequest) {
  fake_->answers = {Part(0, 60, 10), Part(1, 0, 8), Part(1, 8, 8)};
  ExpectRead(0, 60, 10);
  ExpectRead(1, 0, 8);
  ExpectRead(1, 8, 8);
  // Bulk readers go ahead at once and send no probe.
  EXPECT_EQ(client_->MirrorReadyAt(ref_, descs_[0]), std::nullopt);
  EXPECT_EQ(client_->MirrorReadyAt(ref_, descs_[1]), std::nullopt);
  EXPECT_EQ(To("cache.test:5000", 0), 1);
  EXPECT_EQ(To("cache.test:5000", 1), 2);
  EXPECT_EQ(To("reg.test:5000", 0) + To("reg.test:5000", 1), 0);
  EXPECT_EQ(fake_->requests.size(), 3u);
  EXPECT_EQ(client_->stats().mirror_skips, 0u);
}

}  // namespace
}  // namespace lazypull::registry
