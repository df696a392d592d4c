#include "server/config.h"

#include "gtest/gtest.h"

namespace lazypull {
namespace {

TEST(DaemonConfigTest, DefaultsWithoutFile) {
  absl::StatusOr<DaemonConfig> c = LoadDaemonConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->root, "/var/lib/lazypull");
  EXPECT_EQ(c->address, "/run/lazypull/lazypull.sock");
  EXPECT_EQ(c->socket_mode, 0660u);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->mount_backend, MountBackend::kAuto);
  EXPECT_FALSE(c->soci_v1);
  EXPECT_TRUE(c->table->empty());
}

TEST(DaemonConfigTest, ParsesKeysAndKeepsOtherSections) {
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(R"(
root = "/srv/lp"
address = "/tmp/x.sock"
socket_mode = "0600"
log_level = "debug"
[mount]
backend = "erofs"
[registry]
mirrors = ["a"]
)",
                                                     "test.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->root, "/srv/lp");
  EXPECT_EQ(c->address, "/tmp/x.sock");
  EXPECT_EQ(c->socket_mode, 0600u);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->mount_backend, MountBackend::kErofs);
  ASSERT_NE(c->table->get("registry"), nullptr);
  EXPECT_TRUE(c->table->get("registry")->is_table());
  EXPECT_EQ(ParseDaemonConfig("[mount]\nbackend=\"auto\"", "t")->mount_backend,
            MountBackend::kAuto);
}

TEST(DaemonConfigTest, ErrorsNameTheProblem) {
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig("root = 5", "a.toml");
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_NE(c.status().message().find("root"), std::string::npos) << c.status();
  c = ParseDaemonConfig("root = \"unterminated", "b.toml");
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_NE(c.status().message().find("b.toml:1"), std::string::npos) << c.status();
  c = ParseDaemonConfig("[mount]\nbackend = \"nfs\"", "c.toml");
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_NE(c.status().message().find("mount.backend"), std::string::npos) << c.status();
  EXPECT_TRUE(absl::IsInvalidArgument(ParseDaemonConfig("socket_mode = \"999\"", "d").status()));
  EXPECT_TRUE(absl::IsNotFound(LoadDaemonConfig("/nonexistent/lazypull.toml").status()));
}

TEST(DaemonConfigTest, SociV1IsOptIn) {
  EXPECT_FALSE(ParseDaemonConfig("[soci]\nv1 = false", "t")->soci_v1);
  EXPECT_TRUE(ParseDaemonConfig("[soci]\nv1 = true", "t")->soci_v1);
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig("[soci]\nv1 = \"yes\"", "e.toml");
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_NE(c.status().message().find("soci.v1"), std::string::npos) << c.status();
  c = ParseDaemonConfig("[soci]\nv3 = true", "f.toml");
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_NE(c.status().message().find("soci.v3"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace lazypull
