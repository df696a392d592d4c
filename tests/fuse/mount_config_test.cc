// [mount] section parsing (mount/mount_config.h): every key, its units and defaults, the
// combinations ParseMountConfig refuses, and the backend `auto` picks on this kernel (label
// root: choosing EROFS probes a real mount).
#include "mount/mount_config.h"

#include <chrono>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::TempDir;
using ::testing::HasSubstr;

TEST(MountConfigTest, ParsesMountSection) {
  auto table = toml::parse(R"(
    backend = "auto"
    fetch_timeout = "2s"
    prefetch = false
    background_fetch = true
    background_concurrency = 3
    background_bandwidth = "10MiB"
    background_silence = "1s"
    background_quiet = "0"
    background_request_size = "256KiB"
    readahead_window = "1MiB"
    readahead_window_max = "8MiB"
    file_readahead = 0
    directory_batch = "64KiB"
    max_request_size = "8MiB"
    fuse_threads = 8
    attr_timeout = "1h"
  )");
  auto c = mount::ParseMountConfig(table);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->backend, mount::BackendKind::kAuto);
  EXPECT_EQ(c->reader.fetch_timeout, std::chrono::milliseconds(2000));
  EXPECT_FALSE(c->reader.prefetch);
  EXPECT_EQ(c->reader.background_policy.max_in_flight, 3u);
  EXPECT_EQ(c->reader.background_policy.bandwidth, 10u << 20);
  EXPECT_EQ(c->reader.background_silence, std::chrono::milliseconds(1000));
  EXPECT_EQ(c->reader.background_policy.quiet, std::chrono::milliseconds(0));
  EXPECT_EQ(c->reader.background_request_bytes, 256u << 10);
  EXPECT_EQ(c->reader.readahead_window, 1u << 20);
  EXPECT_EQ(c->reader.readahead_window_max, 8u << 20);
  EXPECT_EQ(c->reader.readahead_bytes, 0u);
  EXPECT_EQ(c->reader.directory_batch.small_file, 64u << 10);
  EXPECT_EQ(mount::MountConfig().reader.directory_batch.small_file, 256u << 10);
  // Defaults: auto bandwidth; "auto" and 0 (= unlimited) parse.
  EXPECT_EQ(mount::MountConfig().reader.background_policy.bandwidth, 0u);
  auto unlimited = mount::ParseMountConfig(toml::parse("background_bandwidth = 0"));
  ASSERT_TRUE(unlimited.ok());
  EXPECT_EQ(unlimited->reader.background_policy.bandwidth, BackgroundSchedulerOptions::kUnlimited);
  auto autobw = mount::ParseMountConfig(
      toml::parse("background_bandwidth = \"auto\"\nbackground_bandwidth_fraction = 0.25"));
  ASSERT_TRUE(autobw.ok()) << autobw.status();
  EXPECT_EQ(autobw->reader.background_policy.bandwidth, 0u);
  EXPECT_EQ(autobw->reader.background_policy.bandwidth_fraction, 0.25);
  EXPECT_FALSE(mount::ParseMountConfig(toml::parse("background_bandwidth_fraction = 2")).ok());
  EXPECT_FALSE(mount::ParseMountConfig(
                   toml::parse("readahead_window = \"8MiB\"\nreadahead_window_max = \"1MiB\""))
                   .ok());
  EXPECT_EQ(c->reader.max_request_bytes, 8u << 20);
  EXPECT_EQ(c->fuse.max_threads, 8u);
  EXPECT_EQ(c->fuse.attr_timeout, std::chrono::seconds(3600));
  // The FUSE holder's socket (issue 20): "" = the daemon's <root>/fuse-holder.sock.
  EXPECT_EQ(c->fuse.holder_socket, "");
  EXPECT_EQ(mount::ParseMountConfig(toml::parse("fuse_holder_socket = \"/run/h/h.sock\""))
                ->fuse.holder_socket,
            "/run/h/h.sock");
  auto relative = mount::ParseMountConfig(toml::parse("fuse_holder_socket = \"h.sock\""));
  EXPECT_EQ(relative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(relative.status().message()), HasSubstr("mount.fuse_holder_socket"));
  // auto = EROFS where the kernel can (it can here; the EROFS tests cover the rest).
  TempDir state("mountcfg");
  c->erofs.dir = state.path();
  auto backend = mount::NewLayerMountBackend(*c);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->name(), "erofs");
  c->backend = mount::BackendKind::kFuse;
  EXPECT_EQ((*mount::NewLayerMountBackend(*c))->name(), "fuse");
  auto graduation = mount::ParseMountConfig(
      toml::parse("graduation = false\nerofs_probe_filesystems = \"/tmp/fs\""));
  ASSERT_TRUE(graduation.ok()) << graduation.status();
  EXPECT_FALSE(graduation->erofs.graduation);
  EXPECT_EQ(graduation->erofs.probe_filesystems, "/tmp/fs");
  EXPECT_EQ(mount::MountConfig().backend, mount::BackendKind::kAuto);
  EXPECT_EQ(mount::MountConfig().erofs.attach, mount::ErofsAttach::kAuto);
  EXPECT_EQ(mount::ParseMountConfig(toml::parse("erofs_attach = \"loop\""))->erofs.attach,
            mount::ErofsAttach::kLoop);
  EXPECT_EQ(mount::ParseMountConfig(toml::parse("erofs_attach = \"file\""))->erofs.attach,
            mount::ErofsAttach::kFile);
  EXPECT_EQ(mount::ParseMountConfig(toml::parse("erofs_attach = \"auto\""))->erofs.attach,
            mount::ErofsAttach::kAuto);
  auto bad_attach = mount::ParseMountConfig(toml::parse("erofs_attach = \"nbd\""));
  EXPECT_EQ(bad_attach.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_attach.status().message()),
              HasSubstr("mount.erofs_attach: \"nbd\" is not auto, file or loop"));
  EXPECT_FALSE(mount::ParseMountConfig(toml::parse("erofs_attach = 1")).ok());

  auto bad = mount::ParseMountConfig(toml::parse("backend = \"nfs\""));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("mount.backend"));
  auto unknown = mount::ParseMountConfig(toml::parse("speed = 1"));
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("mount.speed"));
  mount::MountConfig erofs;
  erofs.backend = mount::BackendKind::kErofs;
  erofs.erofs.dir = state.path();
  auto no_erofs = [](const mount::MountConfig&) {
    return absl::FailedPreconditionError("EROFS is not usable here: simulated");
  };
  EXPECT_EQ(mount::NewLayerMountBackend(erofs, no_erofs).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace lazypull
