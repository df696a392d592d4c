// Unit tests of the pure parts of `convert --optimize`: command-line parsing, the process an
// image config describes, the runc spec edits, path normalisation and layer assignment.
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/test_env.h"
#include "tools/optimize/access_recorder.h"
#include "tools/optimize/container_spec.h"
#include "tools/optimize/layer_assignment.h"

namespace lazypull::optimize {
namespace {

using Args = std::vector<std::string>;

TEST(ParseCommandLineTest, ShellWordsAndJsonArrays) {
  EXPECT_EQ(*ParseCommandLine("/bin/sh -c 'cat /etc/a.conf /data/b.txt'"),
            (Args{"/bin/sh", "-c", "cat /etc/a.conf /data/b.txt"}));
  EXPECT_EQ(*ParseCommandLine("  python3   -c \"print(\\\"x\\\" + '$y')\"  "),
            (Args{"python3", "-c", "print(\"x\" + '$y')"}));
  EXPECT_EQ(*ParseCommandLine("a\\ b c\"d\"'e' '' \"\\n\""), (Args{"a b", "cde", "", "\\n"}));
  EXPECT_EQ(*ParseCommandLine(R"(["/bin/sh","-c","echo 'hi' $X"])"),
            (Args{"/bin/sh", "-c", "echo 'hi' $X"}));
  for (const char* bad :
       {"", "   ", "'open", "\"open", "x\\", "[]", "[1]", "[\"a\", 2]", "[oops"}) {
    EXPECT_EQ(ParseCommandLine(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

nlohmann::json Config(nlohmann::json c) { return {{"architecture", "amd64"}, {"config", c}}; }

TEST(ProcessFromImageTest, EntrypointCmdEnvWorkdirAndOverride) {
  testing::TempDir root;
  auto p = ProcessFromImage(Config({{"Entrypoint", {"/bin/sh", "-c"}},
                                    {"Cmd", {"cat x"}},
                                    {"Env", {"A=1", "PATH=/opt/bin"}},
                                    {"WorkingDir", "/data"}}),
                            {}, root.path());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->args, (Args{"/bin/sh", "-c", "cat x"}));
  EXPECT_EQ(p->env, (Args{"A=1", "PATH=/opt/bin"}));
  EXPECT_EQ(p->cwd, "/data");
  EXPECT_EQ(p->uid, 0u);
  EXPECT_EQ(p->gid, 0u);
  // --optimize-cmd replaces entrypoint and cmd; a missing PATH gets containerd's default.
  p = ProcessFromImage(Config({{"Cmd", {"x"}}}), {"/bin/true"}, root.path());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->args, Args{"/bin/true"});
  EXPECT_EQ(p->env, Args{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"});
  EXPECT_EQ(p->cwd, "/");
  // No config object at all, or no command: an error naming the flag to use.
  auto none = ProcessFromImage({{"architecture", "amd64"}}, {}, root.path());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("--optimize-cmd"), std::string::npos);
}

TEST(ProcessFromImageTest, UsersResolveAgainstTheImage) {
  testing::TempDir root;
  ASSERT_TRUE(testing::WriteFile(root.Sub("etc/passwd"),
                                 "root:x:0:0:root:/root:/bin/sh\n"
                                 "# comment\n"
                                 "app:x:1000:1001::/home/app:/bin/sh\n")
                  .ok());
  ASSERT_TRUE(
      testing::WriteFile(root.Sub("etc/group"), "root:x:0:\nappgrp:x:1001:\nextra:x:50:app,bob\n")
          .ok());
  auto user = [&](const std::string& u) {
    return ProcessFromImage(Config({{"Cmd", {"x"}}, {"User", u}}), {}, root.path());
  };
  auto p = user("app");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->uid, 1000u);
  EXPECT_EQ(p->gid, 1001u);
  EXPECT_EQ(p->additional_gids, std::vector<uint32_t>{50});
  p = user("1000");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->gid, 1001u);
  p = user("app:extra");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->uid, 1000u);
  EXPECT_EQ(p->gid, 50u);
  p = user("4242:7");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->uid, 4242u);
  EXPECT_EQ(p->gid, 7u);
  p = user("4242");  // unknown uid: gid 0, as containerd
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->gid, 0u);
  EXPECT_EQ(user("nobody").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(user("app:nogroup").status().code(), absl::StatusCode::kInvalidArgument);
  // An absolute symlink is resolved inside the image, never on the host.
  ASSERT_EQ(::unlink(root.Sub("etc/passwd").c_str()), 0);
  ASSERT_TRUE(testing::WriteFile(root.Sub("inside/passwd"), "svc:x:7:8::/:/bin/sh\n").ok());
  ASSERT_EQ(::symlink("/inside/passwd", root.Sub("etc/passwd").c_str()), 0);
  p = user("svc");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->uid, 7u);
  EXPECT_EQ(p->gid, 8u);
  EXPECT_EQ(user("root").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ApplyProcessSpecTest, EditsTheRuncDefaultSpec) {
  nlohmann::json spec = {{"process", {{"terminal", true}, {"args", {"sh"}}, {"cwd", "/"}}},
                         {"root", {{"path", "rootfs"}, {"readonly", true}}},
                         {"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "network"}}}}}}};
  ProcessSpec p;
  p.args = {"/bin/app", "--x"};
  p.env = {"PATH=/bin"};
  p.cwd = "/srv";
  p.uid = 1000;
  p.gid = 1001;
  p.additional_gids = {50};
  ApplyProcessSpec(p, "/tmp/r/root", spec);
  EXPECT_EQ(spec["process"]["terminal"], false);
  EXPECT_EQ(spec["process"]["args"], nlohmann::json({"/bin/app", "--x"}));
  EXPECT_EQ(spec["process"]["env"], nlohmann::json({"PATH=/bin"}));
  EXPECT_EQ(spec["process"]["cwd"], "/srv");
  EXPECT_EQ(spec["process"]["user"],
            nlohmann::json({{"uid", 1000}, {"gid", 1001}, {"additionalGids", {50}}}));
  EXPECT_EQ(spec["root"], nlohmann::json({{"path", "/tmp/r/root"}, {"readonly", false}}));
  // runc's namespaces (the network one included: no network) are kept.
  EXPECT_EQ(spec["linux"]["namespaces"].size(), 2u);
  EXPECT_EQ(spec["process"]["capabilities"]["bounding"].size(), 14u);
}

TEST(RelativeRecordedPathTest, ContainerAndHostViews) {
  EXPECT_EQ(RelativeRecordedPath("/etc/a.conf", "/tmp/x/root", false), "etc/a.conf");
  EXPECT_EQ(RelativeRecordedPath("/tmp/x/root/etc/a.conf", "/tmp/x/root", true), "etc/a.conf");
  EXPECT_EQ(RelativeRecordedPath("/tmp/x/rootfs/a", "/tmp/x/root", true), "");
  EXPECT_EQ(RelativeRecordedPath("/tmp/scratch (deleted)", "/r", false), "");
  EXPECT_EQ(RelativeRecordedPath("anon_inode:[x]", "/r", false), "");
}

TEST(AssignToLayersTest, TopmostLayerHoldingTheFileWins) {
  std::vector<LayerFiles> layers = {
      {"sha256:base", {"bin/busybox", "etc/a.conf", "data/b.txt"}},
      {"sha256:mid", {"data/b.txt", "lib/x.so"}},
      {"sha256:top", {"data/c.txt"}},
      {"sha256:base", {"bin/busybox"}},  // the same blob again, topmost
  };
  LayerAssignment a = AssignToLayers(
      {"bin/busybox", "data/b.txt", "etc/a.conf", "tmp/made-by-program", "data/c.txt"}, layers);
  EXPECT_EQ(a.by_layer["sha256:base"], (Args{"bin/busybox", "etc/a.conf"}));
  EXPECT_EQ(a.by_layer["sha256:mid"], Args{"data/b.txt"});
  EXPECT_EQ(a.by_layer["sha256:top"], Args{"data/c.txt"});
  EXPECT_EQ(a.unassigned, Args{"tmp/made-by-program"});
}

}  // namespace
}  // namespace lazypull::optimize
