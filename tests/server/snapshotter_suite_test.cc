// containerd's snapshotter testsuite cases, at our own level: the real daemon over its real
// gRPC socket, with the returned mounts mounted for real.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/daemon_fixture.h"

namespace lazypull::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

const LabelMap kGcRoot = {{"containerd.io/gc.root", "2026-01-01T00:00:00Z"}};

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFile(path);
  return s.ok() ? *s : "<missing: " + std::string(s.status().message()) + ">";
}
bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}
void Write(const std::string& path, const std::string& content) {
  ASSERT_TRUE(WriteFile(path, content).ok()) << path;
}
absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}
bool IndexOff() { return Exists("/sys/module/overlay/parameters/index"); }

class SuiteTest : public DaemonTest {
 protected:
  // Prepare(key, parent), mount at a fresh dir, run `fill`, unmount, Commit(name).
  void Layer(const std::string& key, const std::string& parent, const std::string& name,
             const std::function<void(const std::string&)>& fill) {
    MountList mounts;
    ASSERT_GRPC_OK(client_->Prepare(key, parent, kGcRoot, &mounts));
    std::string target = Dir("m-" + std::to_string(counter_++));
    {
      auto m = ScopedMount::Mount(mounts, target);
      ASSERT_TRUE(m.ok()) << m.status();
      fill(target);
    }
    ASSERT_GRPC_OK(client_->Commit(name, key, kGcRoot));
  }
  // Id of a snapshot from the source of its bind mount / upperdir.
  static std::string IdOfDir(const std::string& fs_dir) {
    std::vector<std::string> parts = absl::StrSplit(fs_dir, '/');
    return parts.size() >= 2 ? parts[parts.size() - 2] : "";
  }
  int counter_ = 0;
};

TEST_F(SuiteTest, Basic) {
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("preparing", "", kGcRoot, &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "bind");
  EXPECT_THAT(mounts[0].options(), ElementsAre("rw", "rbind"));
  std::string base_fs = mounts[0].source();
  EXPECT_TRUE(absl::StartsWith(base_fs, SnapshotsDir() + "/")) << base_fs;
  EXPECT_TRUE(absl::EndsWith(base_fs, "/fs")) << base_fs;
  {
    std::string target = Dir("preparing");
    auto m = ScopedMount::Mount(mounts, target);
    ASSERT_TRUE(m.ok()) << m.status();
    Write(target + "/foo", "foo\n");
    ASSERT_EQ(::mkdir((target + "/a").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((target + "/a/b").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((target + "/a/b/c").c_str(), 0755), 0);
  }
  EXPECT_EQ(Read(base_fs + "/foo"), "foo\n");  // landed in the snapshot's own fs dir
  ASSERT_GRPC_OK(client_->Commit("committed", "preparing", kGcRoot));

  snapshots_v1::Info info;
  ASSERT_GRPC_OK(client_->Stat("committed", &info));
  EXPECT_EQ(info.name(), "committed");
  EXPECT_EQ(info.parent(), "");
  EXPECT_EQ(info.kind(), snapshots_v1::COMMITTED);
  EXPECT_GRPC_CODE(client_->Stat("preparing", &info), grpc::StatusCode::NOT_FOUND);

  ASSERT_GRPC_OK(client_->Prepare("nextlayer", "committed", kGcRoot, &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "overlay");
  EXPECT_EQ(mounts[0].source(), "overlay");
  std::string next_id_dir;
  {
    std::vector<std::string> want;
    if (IndexOff()) want.push_back("index=off");
    ASSERT_GE(mounts[0].options_size(), 3);
    std::string work = mounts[0].options(mounts[0].options_size() - 3);
    ASSERT_TRUE(absl::StartsWith(work, "workdir=")) << work;
    next_id_dir = work.substr(8, work.size() - 8 - 5);  // strip "workdir=" and "/work"
    want.push_back("workdir=" + next_id_dir + "/work");
    want.push_back("upperdir=" + next_id_dir + "/fs");
    want.push_back("lowerdir=" + base_fs);
    EXPECT_THAT(std::vector<std::string>(mounts[0].options().begin(), mounts[0].options().end()),
                ::testing::ElementsAreArray(want));
  }
  {
    std::string target = Dir("nextlayer");
    auto m = ScopedMount::Mount(mounts, target);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(Read(target + "/foo"), "foo\n");
    EXPECT_TRUE(Exists(target + "/a/b/c"));
    Write(target + "/bar", "bar\n");
    Write(target + "/foo", "bar\n");
    ASSERT_EQ(std::system(("rm -rf " + target + "/a/b").c_str()), 0);
  }
  EXPECT_EQ(Read(next_id_dir + "/fs/bar"), "bar\n");
  EXPECT_EQ(Read(base_fs + "/foo"), "foo\n");  // lower untouched
  ASSERT_GRPC_OK(client_->Commit("nextCommitted", "nextlayer", kGcRoot));
  ASSERT_GRPC_OK(client_->Stat("nextCommitted", &info));
  EXPECT_EQ(info.parent(), "committed");
  EXPECT_EQ(info.kind(), snapshots_v1::COMMITTED);

  ASSERT_GRPC_OK(client_->View("nextview", "nextCommitted", kGcRoot, &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "overlay");
  {
    std::vector<std::string> want;
    if (IndexOff()) want.push_back("index=off");
    want.push_back("lowerdir=" + next_id_dir + "/fs:" + base_fs);
    EXPECT_THAT(std::vector<std::string>(mounts[0].options().begin(), mounts[0].options().end()),
                ::testing::ElementsAreArray(want));
    std::string target = Dir("nextview");
    auto m = ScopedMount::Mount(mounts, target);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(Read(target + "/foo"), "bar\n");
    EXPECT_EQ(Read(target + "/bar"), "bar\n");
    EXPECT_TRUE(Exists(target + "/a"));
    EXPECT_FALSE(Exists(target + "/a/b"));
  }
  ASSERT_GRPC_OK(client_->Stat("nextview", &info));
  EXPECT_EQ(info.kind(), snapshots_v1::VIEW);
  EXPECT_EQ(info.parent(), "nextCommitted");
  EXPECT_GRPC_CODE(client_->Remove("committed"), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_GRPC_OK(client_->Remove("nextview"));
  ASSERT_GRPC_OK(client_->Remove("nextCommitted"));
  ASSERT_GRPC_OK(client_->Remove("committed"));
  EXPECT_THAT(ListDir(SnapshotsDir()), IsEmpty());
}

TEST_F(SuiteTest, StatActive) {
  absl::Time before = absl::Now();
  LabelMap labels = {{"l1", "v1"}, {"containerd.io/gc.root", "x"}};
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("active", "", labels, &mounts));
  snapshots_v1::Info info;
  ASSERT_GRPC_OK(client_->Stat("active", &info));
  EXPECT_EQ(info.name(), "active");
  EXPECT_EQ(info.parent(), "");
  EXPECT_EQ(info.kind(), snapshots_v1::ACTIVE);
  EXPECT_EQ(LabelMap(info.labels().begin(), info.labels().end()), labels);
  EXPECT_GE(ToTime(info.created_at()), before);
  EXPECT_LE(ToTime(info.created_at()), absl::Now());
  EXPECT_EQ(ToTime(info.created_at()), ToTime(info.updated_at()));
}

TEST_F(SuiteTest, StatCommitted) {
  Layer("active", "", "committed", [](const std::string& d) { Write(d + "/f", "x"); });
  snapshots_v1::Info info;
  ASSERT_GRPC_OK(client_->Stat("committed", &info));
  EXPECT_EQ(info.name(), "committed");
  EXPECT_EQ(info.kind(), snapshots_v1::COMMITTED);
  EXPECT_EQ(info.parent(), "");
  EXPECT_EQ(LabelMap(info.labels().begin(), info.labels().end()), kGcRoot);
  // A committed snapshot has no mounts of its own.
  EXPECT_GRPC_CODE(client_->Mounts("committed", nullptr), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(SuiteTest, TransitivityTest) {
  Layer("a-key", "", "a", [](const std::string& d) { Write(d + "/foo", "foo\n"); });
  Layer("b-key", "a", "b", [](const std::string& d) { Write(d + "/foo", "foo bar\n"); });
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("view", "b", {}, &mounts));
  std::string target = Dir("view");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Read(target + "/foo"), "foo bar\n");
  snapshots_v1::Info info;
  ASSERT_GRPC_OK(client_->Stat("b", &info));
  EXPECT_EQ(info.parent(), "a");
}

TEST_F(SuiteTest, PreparePrepare) {
  ASSERT_GRPC_OK(client_->Prepare("k", "", kGcRoot));
  EXPECT_GRPC_CODE(client_->Prepare("k", "", kGcRoot), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_GRPC_CODE(client_->View("k", "", kGcRoot), grpc::StatusCode::ALREADY_EXISTS);
  // An active snapshot cannot be a parent (containerd's PreareViewFailingtest).
  EXPECT_GRPC_CODE(client_->Prepare("child", "k", kGcRoot), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->View("child", "k", kGcRoot), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_GRPC_OK(client_->Commit("c", "k"));
  EXPECT_GRPC_CODE(client_->Prepare("c", "", kGcRoot), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_GRPC_OK(client_->Prepare("k2", ""));
  EXPECT_GRPC_CODE(client_->Commit("c", "k2"), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_GRPC_CODE(client_->Commit("c2", "c"), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_GRPC_OK(client_->View("v", "c"));
  EXPECT_GRPC_CODE(client_->Commit("c3", "v"), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_GRPC_CODE(client_->Commit("c4", "missing"), grpc::StatusCode::NOT_FOUND);
  std::vector<snapshots_v1::Info> infos;
  ASSERT_GRPC_OK(client_->List({}, &infos));
  EXPECT_EQ(infos.size(), 3u);  // c, k2, v
}

TEST_F(SuiteTest, ViewReadonly) {
  Layer("p", "", "committed", [](const std::string& d) { Write(d + "/f", "x"); });
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("view", "committed", kGcRoot, &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "bind");
  EXPECT_THAT(mounts[0].options(), ElementsAre("ro", "rbind"));
  std::string target = Dir("view");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Read(target + "/f"), "x");
  int fd = ::open((target + "/new").c_str(), O_CREAT | O_WRONLY, 0644);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EROFS);
  if (fd >= 0) ::close(fd);
  // View without parent: ro bind of its own (empty) fs.
  ASSERT_GRPC_OK(client_->View("view2", "", kGcRoot, &mounts));
  EXPECT_THAT(mounts[0].options(), ElementsAre("ro", "rbind"));
}

TEST_F(SuiteTest, RemoveIntermediateSnapshot) {
  Layer("base-k", "", "base", [](const std::string& d) { Write(d + "/b", "b"); });
  Layer("mid-k", "base", "mid", [](const std::string& d) { Write(d + "/m", "m"); });
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("top", "mid", kGcRoot, &mounts));
  EXPECT_EQ(ListDir(SnapshotsDir()).size(), 3u);
  grpc::Status s = client_->Remove("mid");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("cannot remove snapshot with child"));
  EXPECT_GRPC_CODE(client_->Remove("base"), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_GRPC_OK(client_->Remove("top"));
  ASSERT_GRPC_OK(client_->Remove("mid"));
  ASSERT_GRPC_OK(client_->Remove("base"));
  EXPECT_THAT(ListDir(SnapshotsDir()), IsEmpty());
  EXPECT_GRPC_CODE(client_->Remove("base"), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SuiteTest, DeletedFilesInChildSnapshot) {
  Layer("l1", "", "c1", [](const std::string& d) {
    Write(d + "/foo", "foo\n");
    Write(d + "/dir/keep", "k");
  });
  Layer("l2", "c1", "c2", [](const std::string& d) {
    ASSERT_EQ(::unlink((d + "/foo").c_str()), 0);
    ASSERT_EQ(std::system(("rm -rf " + d + "/dir").c_str()), 0);
  });
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("v", "c2", {}, &mounts));
  std::string target = Dir("v");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(Exists(target + "/foo"));
  EXPECT_FALSE(Exists(target + "/dir"));
}

TEST_F(SuiteTest, MoveFileFromLowerLayer) {
  Layer("l1", "", "c1", [](const std::string& d) {
    Write(d + "/dir/a", "content");
    Write(d + "/dir/b", "b");
  });
  Layer("l2", "c1", "c2", [](const std::string& d) {
    ASSERT_EQ(::rename((d + "/dir/a").c_str(), (d + "/moved").c_str()), 0);
  });
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("v", "c2", {}, &mounts));
  std::string target = Dir("v");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Read(target + "/moved"), "content");
  EXPECT_FALSE(Exists(target + "/dir/a"));
  EXPECT_EQ(Read(target + "/dir/b"), "b");
}

TEST_F(SuiteTest, Update) {
  absl::Time t1 = absl::Now();
  ASSERT_GRPC_OK(client_->Prepare("a", "", {{"l0", "v0"}}));
  snapshots_v1::Info st;
  ASSERT_GRPC_OK(client_->Stat("a", &st));
  absl::Time created = ToTime(st.created_at());
  EXPECT_GE(created, t1);

  st.set_parent("doesnotexist");
  st.mutable_labels()->clear();
  (*st.mutable_labels())["l1"] = "v1";
  (*st.mutable_labels())["l2"] = "v2";
  (*st.mutable_labels())["l3"] = "v3";
  absl::Time u1 = absl::Now();
  snapshots_v1::Info up;
  ASSERT_GRPC_OK(client_->Update(st, {}, &up));
  EXPECT_EQ(ToTime(up.created_at()), created);
  EXPECT_GE(ToTime(up.updated_at()), u1);
  EXPECT_EQ(up.parent(), "");
  EXPECT_EQ(up.kind(), snapshots_v1::ACTIVE);
  EXPECT_EQ(LabelMap(up.labels().begin(), up.labels().end()),
            (LabelMap{{"l1", "v1"}, {"l2", "v2"}, {"l3", "v3"}}));

  st.mutable_labels()->clear();
  (*st.mutable_labels())["l1"] = "updated";
  (*st.mutable_labels())["l4"] = "v4";
  ASSERT_GRPC_OK(client_->Update(st, {"labels.l1", "labels.l2"}, &up));
  EXPECT_EQ(LabelMap(up.labels().begin(), up.labels().end()),
            (LabelMap{{"l1", "updated"}, {"l3", "v3"}}));

  st.mutable_labels()->clear();
  (*st.mutable_labels())["l4"] = "v4";
  ASSERT_GRPC_OK(client_->Update(st, {"labels"}, &up));
  EXPECT_EQ(LabelMap(up.labels().begin(), up.labels().end()), (LabelMap{{"l4", "v4"}}));

  // Persisted, as Stat sees it.
  snapshots_v1::Info again;
  ASSERT_GRPC_OK(client_->Stat("a", &again));
  EXPECT_EQ(LabelMap(again.labels().begin(), again.labels().end()), (LabelMap{{"l4", "v4"}}));
  EXPECT_EQ(ToTime(again.updated_at()), ToTime(up.updated_at()));

  EXPECT_GRPC_CODE(client_->Update(st, {"parent"}, nullptr), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Update(st, {"name"}, nullptr), grpc::StatusCode::INVALID_ARGUMENT);
  st.set_name("missing");
  EXPECT_GRPC_CODE(client_->Update(st, {"labels"}, nullptr), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SuiteTest, Remove) {
  ASSERT_GRPC_OK(client_->Prepare("committed-a", "", kGcRoot));
  ASSERT_GRPC_OK(client_->Commit("committed-1", "committed-a", kGcRoot));
  ASSERT_GRPC_OK(client_->Prepare("reuse-1", "committed-1", kGcRoot));
  ASSERT_GRPC_OK(client_->Remove("reuse-1"));
  ASSERT_GRPC_OK(client_->View("reuse-1", "committed-1", kGcRoot));
  ASSERT_GRPC_OK(client_->Remove("reuse-1"));
  ASSERT_GRPC_OK(client_->Prepare("reuse-1", "", kGcRoot));
  ASSERT_GRPC_OK(client_->Remove("committed-1"));
  ASSERT_GRPC_OK(client_->Commit("committed-1", "reuse-1", kGcRoot));
  EXPECT_EQ(ListDir(SnapshotsDir()).size(), 1u);
}

TEST_F(SuiteTest, Walk) {
  LabelMap ref = {{"containerd.io/snapshot.ref", "sha256:abc"}, {"gc", "x"}};
  ASSERT_GRPC_OK(client_->Prepare("a1", "", {{"gc", "x"}}));
  ASSERT_GRPC_OK(client_->Commit("c1", "a1", ref));
  ASSERT_GRPC_OK(client_->Prepare("a2", "c1", {{"other", "y"}}));
  ASSERT_GRPC_OK(client_->View("v1", "c1"));
  ASSERT_GRPC_OK(client_->Prepare("a3", ""));
  auto names = [&](const std::vector<std::string>& filters) {
    std::vector<snapshots_v1::Info> infos;
    grpc::Status s = client_->List(filters, &infos);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> out;
    for (const auto& i : infos) out.push_back(i.name());
    return out;
  };
  EXPECT_THAT(names({}), UnorderedElementsAre("c1", "a2", "v1", "a3"));
  EXPECT_THAT(names({"kind==active"}), UnorderedElementsAre("a2", "a3"));
  EXPECT_THAT(names({"kind==committed"}), ElementsAre("c1"));
  EXPECT_THAT(names({"kind==view"}), ElementsAre("v1"));
  EXPECT_THAT(names({"name==a2"}), ElementsAre("a2"));
  EXPECT_THAT(names({"parent==c1"}), UnorderedElementsAre("a2", "v1"));
  EXPECT_THAT(names({"parent!=\"\""}), UnorderedElementsAre("a2", "v1"));
  EXPECT_THAT(names({"labels.\"containerd.io/snapshot.ref\"==sha256:abc"}), ElementsAre("c1"));
  EXPECT_THAT(names({"labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"\""}),
              ElementsAre("c1"));
  EXPECT_THAT(names({"labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==c1"}), IsEmpty());
  EXPECT_THAT(names({"labels.other"}), ElementsAre("a2"));
  EXPECT_THAT(names({"labels.gc"}), ElementsAre("c1"));
  EXPECT_THAT(names({"kind==view", "name==a3"}), UnorderedElementsAre("v1", "a3"));
  EXPECT_THAT(names({"kind==active,parent==c1"}), ElementsAre("a2"));
  EXPECT_THAT(names({"name~=^a"}), UnorderedElementsAre("a2", "a3"));
  std::vector<snapshots_v1::Info> infos;
  EXPECT_GRPC_CODE(client_->List({"name=="}, &infos), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->List({"kind=active"}, &infos), grpc::StatusCode::INVALID_ARGUMENT);
  // Many snapshots stream in several messages; every one arrives once.
  for (int i = 0; i < 250; ++i) ASSERT_GRPC_OK(client_->View(absl::StrCat("many-", i), "c1"));
  EXPECT_EQ(names({"parent==c1"}).size(), 252u);
}

TEST_F(SuiteTest, LayersMount128) {
  std::string parent;
  for (int i = 0; i < 128; ++i) {
    std::string key = absl::StrCat("prepare-layer-", i);
    std::string name = absl::StrCat("committed-", i);
    MountList mounts;
    ASSERT_GRPC_OK(client_->Prepare(key, parent, kGcRoot, &mounts));
    // The daemon writes into the upper dir directly: only the final view is mounted, plus a
    // mount of the 127-parent active snapshot (overlay with the longest options).
    std::string upper = mounts[0].type() == "bind" ? mounts[0].source() : "";
    for (const std::string& o : mounts[0].options()) {
      if (absl::StartsWith(o, "upperdir=")) upper = o.substr(9);
    }
    ASSERT_FALSE(upper.empty());
    Write(upper + "/overwriteme", absl::StrCat(i, " WAS HERE!\n"));
    Write(upper + absl::StrCat("/ADDHERE/file-", i), "same\n");
    if (i == 127) {
      std::string target = Dir("layer127");
      auto m = ScopedMount::Mount(mounts, target);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(Read(target + "/bottom"), "way at the bottom\n");
      EXPECT_EQ(Read(target + "/overwriteme"), "127 WAS HERE!\n");
      EXPECT_EQ(ListDir(target + "/ADDHERE").size(), 128u);
    }
    if (i == 0) Write(upper + "/bottom", "way at the bottom\n");
    ASSERT_GRPC_OK(client_->Commit(name, key, kGcRoot));
    parent = name;
  }
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("fullview", parent, kGcRoot, &mounts));
  ASSERT_EQ(mounts[0].type(), "overlay");
  size_t option_bytes = 0;
  for (const std::string& o : mounts[0].options()) option_bytes += o.size() + 1;
  EXPECT_GT(option_bytes, static_cast<size_t>(::getpagesize()));  // needs the compaction
  std::string target = Dir("fullview");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Read(target + "/bottom"), "way at the bottom\n");
  EXPECT_EQ(Read(target + "/overwriteme"), "127 WAS HERE!\n");
  EXPECT_EQ(ListDir(target + "/ADDHERE").size(), 128u);
  EXPECT_EQ(Read(target + "/ADDHERE/file-64"), "same\n");
}

TEST_F(SuiteTest, CloseTwice) {
  ASSERT_GRPC_OK(client_->Prepare("closeTwice-prepare", "", kGcRoot));
  ASSERT_GRPC_OK(client_->Commit("closeTwice", "closeTwice-prepare", kGcRoot));
  ASSERT_GRPC_OK(client_->Remove("closeTwice"));
  client_.reset();
  client_.reset();
  // Clients come and go; the daemon keeps serving.
  for (int i = 0; i < 2; ++i) {
    SnapshotClient c(daemon_->grpc_target());
    std::vector<snapshots_v1::Info> infos;
    ASSERT_GRPC_OK(c.List({}, &infos));
    EXPECT_THAT(infos, IsEmpty());
  }
  EXPECT_TRUE(daemon_->running());
}

TEST_F(SuiteTest, RootPermission) {
  ::umask(077);  // the daemon's mode must not depend on anyone's umask
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("preparing", "", kGcRoot, &mounts));
  ::umask(022);
  std::string target = Dir("preparing");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  struct stat st;
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
}

TEST_F(SuiteTest, Chown) {
  Layer("l1", "", "c1", [](const std::string& d) {});
  // Change the owner of the committed layer's root; a child's fs dir inherits it.
  MountList mounts;
  ASSERT_GRPC_OK(client_->View("v", "c1", {}, &mounts));
  std::string c1_fs = mounts[0].source();
  ASSERT_EQ(::chown(c1_fs.c_str(), 1234, 5678), 0);
  ASSERT_GRPC_OK(client_->Prepare("child", "c1", {}, &mounts));
  std::string upper;
  for (const std::string& o : mounts[0].options()) {
    if (absl::StartsWith(o, "upperdir=")) upper = o.substr(9);
  }
  struct stat st;
  ASSERT_EQ(::stat(upper.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  std::string target = Dir("child");
  auto m = ScopedMount::Mount(mounts, target);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
}

TEST_F(SuiteTest, Usage) {
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("a", "", {}, &mounts));
  int64_t size = -1, inodes = -1;
  ASSERT_GRPC_OK(client_->Usage("a", &size, &inodes));
  EXPECT_EQ(inodes, 1);  // the fs dir itself
  std::string fs = mounts[0].source();
  Write(fs + "/big", std::string(1 << 20, 'x'));
  ASSERT_EQ(::link((fs + "/big").c_str(), (fs + "/hardlink").c_str()), 0);  // counted once
  Write(fs + "/d/small", "s");
  int64_t active_size = 0, active_inodes = 0;
  ASSERT_GRPC_OK(client_->Usage("a", &active_size, &active_inodes));
  EXPECT_EQ(active_inodes, 4);  // fs, big(=hardlink), d, d/small
  EXPECT_GE(active_size, 1 << 20);
  EXPECT_LT(active_size, (1 << 20) + 64 * 1024);
  ASSERT_GRPC_OK(client_->Commit("c", "a"));
  ASSERT_EQ(::unlink((fs + "/big").c_str()), 0);  // stored value does not re-measure
  ASSERT_GRPC_OK(client_->Usage("c", &size, &inodes));
  EXPECT_EQ(size, active_size);
  EXPECT_EQ(inodes, active_inodes);
  EXPECT_GRPC_CODE(client_->Usage("missing", &size, &inodes), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SuiteTest, Cleanup) {
  ASSERT_GRPC_OK(client_->Prepare("keep", ""));
  ASSERT_GRPC_OK(client_->Prepare("gone", ""));
  std::vector<std::string> before = ListDir(SnapshotsDir());
  ASSERT_EQ(before.size(), 2u);
  // Leftovers: a temp dir of an interrupted Prepare and a directory no snapshot refers to.
  ASSERT_EQ(::mkdir((SnapshotsDir() + "/new-abc123").c_str(), 0700), 0);
  Write(SnapshotsDir() + "/new-abc123/fs/file", "x");
  Write(SnapshotsDir() + "/99999/fs/file", "x");
  ASSERT_GRPC_OK(client_->Remove("gone"));
  EXPECT_EQ(ListDir(SnapshotsDir()).size(), 3u);
  ASSERT_GRPC_OK(client_->Cleanup());
  std::vector<std::string> after = ListDir(SnapshotsDir());
  ASSERT_EQ(after.size(), 1u);
  MountList mounts;
  ASSERT_GRPC_OK(client_->Mounts("keep", &mounts));
  EXPECT_EQ(mounts[0].source(), SnapshotsDir() + "/" + after[0] + "/fs");
  ASSERT_GRPC_OK(client_->Cleanup());  // idempotent
  EXPECT_EQ(ListDir(SnapshotsDir()), after);
}

TEST_F(SuiteTest, PersistsAcrossRestart) {
  Layer("l1", "", "c1", [](const std::string& d) { Write(d + "/f", "x"); });
  ASSERT_GRPC_OK(client_->Prepare("a", "c1", {{"k", "v"}}));
  MountList before, after;
  ASSERT_GRPC_OK(client_->Mounts("a", &before));
  snapshots_v1::Info info_before, info_after;
  ASSERT_GRPC_OK(client_->Stat("a", &info_before));
  ASSERT_TRUE(daemon_->Restart().ok());
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ASSERT_GRPC_OK(client_->Mounts("a", &after));
  ASSERT_GRPC_OK(client_->Stat("a", &info_after));
  EXPECT_EQ(before[0].SerializeAsString(), after[0].SerializeAsString());
  EXPECT_EQ(info_before.SerializeAsString(), info_after.SerializeAsString());
  // Ids are never reused after a restart.
  MountList fresh;
  ASSERT_GRPC_OK(client_->Prepare("b", "", {}, &fresh));
  EXPECT_EQ(ListDir(SnapshotsDir()).size(), 3u);
}

}  // namespace
}  // namespace lazypull::testing
