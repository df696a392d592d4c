// Unit tests of the metrics module: the registry's exposition (names, types, values recorded
// through the observers and the RPC hook, scrape-time sources and their lifetime), listen
// addresses, the HTTP endpoint (served, port in use) and the [metrics] config section.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"
#include "metrics/metrics_server.h"
#include "server/config.h"
#include "tests/deploy/prom_text.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

using metrics::Metrics;

TEST(MetricsTest, RecordsRegistryFuseAndRpcEventsWithPrometheusNames) {
  Metrics m;
  auto reg = m.registry_observer();
  reg->OnResponse({.method = "GET",
                   .host = "mirror.example:5070",
                   .status = 206,
                   .body_bytes = 1000,
                   .duration = std::chrono::milliseconds(3)});
  reg->OnResponse({.method = "GET",
                   .host = "registry.example",
                   .status = 206,
                   .body_bytes = 24,
                   .duration = std::chrono::milliseconds(700)});
  reg->OnResponse({.method = "GET", .status = 0, .duration = std::chrono::seconds(2)});
  auto fs = m.fs_op_observer();
  for (int i = 0; i < 5; ++i) fs->OnOp(mount::kLayerFs, "read", std::chrono::microseconds(40));
  fs->OnOp(mount::kBlobFs, "lookup", std::chrono::microseconds(3));
  m.RecordSnapshotRpc("Prepare", absl::StatusCode::kAlreadyExists, absl::Milliseconds(20));
  m.RecordSnapshotRpc("Prepare", absl::StatusCode::kOk, absl::Milliseconds(2));
  m.RecordSnapshotRpc("Stat", absl::StatusCode::kNotFound, absl::Microseconds(300));
  m.SetRestoreResult(3, 1);

  const std::string text = m.TextExposition();
  auto p = ParsePromText(text);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Sum("lazypull_registry_requests_total", {{"status", "206"}}), 2);
  EXPECT_EQ(p->Sum("lazypull_registry_requests_total", {{"status", "error"}}), 1);
  EXPECT_EQ(p->Sum("lazypull_registry_received_bytes_total", {{"status", "206"}}), 1024);
  // Registry hosts are private (issue 17): never a label value.
  EXPECT_FALSE(absl::StrContains(text, "mirror.example")) << text;
  EXPECT_FALSE(absl::StrContains(text, "registry.example")) << text;
  EXPECT_EQ(p->Sum("lazypull_registry_request_duration_seconds_count", {{"status", "206"}}), 2);
  EXPECT_NEAR(p->Sum("lazypull_registry_request_duration_seconds_sum", {{"status", "206"}}), 0.703,
              1e-9);
  // Cumulative buckets: the 3 ms request is under 5 ms, the 700 ms one only from 1 s up.
  EXPECT_EQ(p->Sum("lazypull_registry_request_duration_seconds_bucket",
                   {{"status", "206"}, {"le", "0.005"}}),
            1);
  EXPECT_EQ(
      p->Sum("lazypull_registry_request_duration_seconds_bucket", {{"status", "206"}, {"le", "1"}}),
      2);
  EXPECT_EQ(p->Sum("lazypull_fuse_operations_total", {{"fs", "layer"}, {"op", "read"}}), 5);
  EXPECT_EQ(p->Sum("lazypull_fuse_operations_total", {{"fs", "erofs_blob"}, {"op", "lookup"}}), 1);
  EXPECT_EQ(p->Sum("lazypull_fuse_operation_duration_seconds_count", {{"op", "read"}}), 5);
  EXPECT_EQ(p->Sum("lazypull_snapshot_requests_total", {{"method", "Prepare"}}), 2);
  EXPECT_EQ(p->Sum("lazypull_snapshot_request_errors_total",
                   {{"method", "Prepare"}, {"code", "ALREADY_EXISTS"}}),
            1);
  EXPECT_EQ(p->Sum("lazypull_snapshot_request_errors_total", {{"method", "Stat"}}), 1);
  EXPECT_EQ(p->Sum("lazypull_snapshot_request_duration_seconds_count", {{"method", "Stat"}}), 1);
  EXPECT_EQ(p->Sum("lazypull_restored_layers", {{"result", "ok"}}), 3);
  EXPECT_EQ(p->Sum("lazypull_restored_layers", {{"result", "failed"}}), 1);
  EXPECT_EQ(p->Sum("lazypull_build_info"), 1);

  // Naming rules: the prefix, _total on counters only, histograms in seconds.
  for (const auto& [name, type] : p->types) {
    EXPECT_TRUE(absl::StartsWith(name, "lazypull_")) << name;
    EXPECT_EQ(type == "counter", absl::EndsWith(name, "_total")) << name << " " << type;
    if (type == "histogram") EXPECT_TRUE(absl::EndsWith(name, "_seconds")) << name;
  }
  auto checked = PromtoolCheck(text);
  EXPECT_TRUE(checked.ok()) << checked.status();
}

TEST(MetricsTest, SourcesAreScrapedUntilTheirHandleGoes) {
  Metrics m;
  std::atomic<int> calls{0};
  Metrics::SourceHandle h = m.AddSource([&](metrics::FamilySet& out) {
    ++calls;
    out.Counter("lazypull_test_things_total", "Things.", {{"kind", "a"}}, 7);
    out.Counter("lazypull_test_things_total", "Things.", {{"kind", "b"}}, 8);
    out.Gauge("lazypull_test_level", "Level.", {}, 0.25);
    // Broken names are dropped, never exposed.
    out.Counter("lazypull_test_no_suffix", "Bad.", {}, 1);
    out.Gauge("other_prefix_level", "Bad.", {}, 1);
  });
  auto p = ParsePromText(m.TextExposition());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(p->Sum("lazypull_test_things_total"), 15);
  EXPECT_EQ(p->Sum("lazypull_test_level"), 0.25);
  EXPECT_EQ(p->types["lazypull_test_things_total"], "counter");
  EXPECT_FALSE(p->Has("lazypull_test_no_suffix"));
  EXPECT_FALSE(p->Has("other_prefix_level"));
  h.Reset();
  p = ParsePromText(m.TextExposition());
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->Has("lazypull_test_things_total"));
  EXPECT_EQ(calls.load(), 1);
}

TEST(MetricsTest, ObserversOutliveTheMetricsObject) {
  std::shared_ptr<mount::FsOpObserver> fs;
  std::shared_ptr<prometheus::Collectable> collectable;
  {
    Metrics m;
    fs = m.fs_op_observer();
    collectable = m.collectable();
  }
  fs->OnOp(mount::kLayerFs, "getattr", std::chrono::microseconds(1));  // no crash (ASan-clean)
  EXPECT_FALSE(collectable->Collect().empty());
}

TEST(ListenAddressTest, AcceptsTheDocumentedFormsAndNamesBadOnes) {
  auto a = metrics::ParseListenAddress("127.0.0.1:9102");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ToString(), "127.0.0.1:9102");
  EXPECT_EQ(metrics::ParseListenAddress(":9102")->ToString(), "0.0.0.0:9102");
  EXPECT_EQ(metrics::ParseListenAddress("localhost:80")->ToString(), "127.0.0.1:80");
  EXPECT_EQ(metrics::ParseListenAddress("[::1]:9102")->ToString(), "[::1]:9102");
  for (const char* bad : {"9102", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "host:9102",
                          "::1:9102", "[::1]9102", "1.2.3.4:x"}) {
    auto r = metrics::ParseListenAddress(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
    EXPECT_TRUE(absl::StrContains(r.status().message(), bad)) << r.status();
  }
}

// --metrics-host (the Helm chart passes the node's IP): the config's port, the given host.
TEST(ListenAddressTest, ReplaceListenHostKeepsThePort) {
  EXPECT_EQ(*metrics::ReplaceListenHost("127.0.0.1:9102", "10.0.0.7"), "10.0.0.7:9102");
  EXPECT_EQ(*metrics::ReplaceListenHost("127.0.0.1:9200", "fd00::7"), "[fd00::7]:9200");
  EXPECT_EQ(*metrics::ReplaceListenHost("[::1]:9102", "[fd00::7]"), "[fd00::7]:9102");
  for (const char* bad : {"", "node-1", "$(LAZYPULL_NODE_IP)", "10.0.0.7:1"}) {
    auto r = metrics::ReplaceListenHost("127.0.0.1:9102", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  }
  EXPECT_FALSE(metrics::ReplaceListenHost("9102", "10.0.0.7").ok());
}

TEST(MetricsServerTest, ServesTheRegistryOverHttp) {
  Metrics m;
  m.RecordSnapshotRpc("Stat", absl::StatusCode::kOk, absl::Milliseconds(1));
  const std::string address = "127.0.0.1:" + std::to_string(PickFreePort());
  auto server = metrics::MetricsServer::Start(address, m);
  ASSERT_TRUE(server.ok()) << server.status();
  auto p = Scrape(address);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Sum("lazypull_snapshot_requests_total", {{"method", "Stat"}}), 1);
  m.RecordSnapshotRpc("Stat", absl::StatusCode::kOk, absl::Milliseconds(1));
  p = Scrape(address);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Sum("lazypull_snapshot_requests_total", {{"method", "Stat"}}), 2);
  server->reset();
  EXPECT_FALSE(ScrapeMetrics(address).ok());
}

TEST(MetricsServerTest, PortInUseIsAClearError) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  Metrics m;
  auto server = metrics::MetricsServer::Start(address, m);
  ::close(fd);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(server.status())) << server.status();
  EXPECT_TRUE(absl::StrContains(server.status().message(), address)) << server.status();
  EXPECT_TRUE(absl::StrContains(server.status().message(), "Address already in use"))
      << server.status();
}

TEST(MetricsConfigTest, DefaultOverrideAndErrors) {
  auto c = ParseDaemonConfig("", "t");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->metrics_address, "127.0.0.1:9102");
  c = ParseDaemonConfig("[metrics]\naddress = \"\"\n", "t");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->metrics_address, "");
  c = ParseDaemonConfig("[metrics]\naddress = 9102\n", "m.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "metrics.address")) << c.status();
  c = ParseDaemonConfig("[metrics]\nadress = \"127.0.0.1:1\"\n", "m.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "metrics.adress")) << c.status();
}

}  // namespace
}  // namespace lazypull::testing
