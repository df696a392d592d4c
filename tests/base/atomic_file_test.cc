// base/atomic_file: the one atomic, durable file replacement (real files in a TempDir).
#include "base/atomic_file.h"

#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::ReadFile;
using ::lazypull::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

TEST(AtomicFileTest, WritesContentWithExactModeWhateverTheUmask) {
  TempDir tmp;
  mode_t old = ::umask(077);
  absl::Status st = WriteFileAtomically(tmp.Sub("state.json"), "{\"a\":1}\n", 0644);
  ::umask(old);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(*ReadFile(tmp.Sub("state.json")), "{\"a\":1}\n");
  EXPECT_EQ(ModeOf(tmp.Sub("state.json")), 0644u);
  EXPECT_THAT(Names(tmp.path()), ElementsAre("state.json"));  // no temp file left

  ASSERT_TRUE(WriteFileAtomically(tmp.Sub("secret"), "", 0400).ok());
  EXPECT_EQ(*ReadFile(tmp.Sub("secret")), "");
  EXPECT_EQ(ModeOf(tmp.Sub("secret")), 0400u);
}

TEST(AtomicFileTest, ReplacesTheWholeOldContent) {
  TempDir tmp;
  ASSERT_TRUE(WriteFileAtomically(tmp.Sub("f"), std::string(10000, 'o'), 0444).ok());
  ASSERT_TRUE(WriteFileAtomically(tmp.Sub("f"), "new", 0600).ok());
  EXPECT_EQ(*ReadFile(tmp.Sub("f")), "new");
  EXPECT_EQ(ModeOf(tmp.Sub("f")), 0600u);
  EXPECT_THAT(Names(tmp.path()), ElementsAre("f"));
}

TEST(AtomicFileTest, MissingDirectoryIsNotFoundNamingTheTempPath) {
  TempDir tmp;
  absl::Status st = WriteFileAtomically(tmp.Sub("no/such/f"), "x", 0644);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(tmp.Sub("no/such/f.tmp-")));
}

TEST(AtomicFileTest, FailedRenameKeepsTheTargetAndRemovesTheTemp) {
  TempDir tmp;
  // A non-empty directory cannot be replaced by a file: rename fails with EISDIR.
  ASSERT_EQ(::mkdir(tmp.Sub("target").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomically(tmp.Sub("target/keep"), "kept", 0644).ok());
  absl::Status st = WriteFileAtomically(tmp.Sub("target"), "x", 0644);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;  // EISDIR
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("rename"));
  EXPECT_EQ(*ReadFile(tmp.Sub("target/keep")), "kept");
  EXPECT_THAT(Names(tmp.path()), ElementsAre("target"));
}

TEST(AtomicFileTest, UncommittedFileLeavesTheTargetUntouched) {
  TempDir tmp;
  ASSERT_TRUE(WriteFileAtomically(tmp.Sub("f"), "old", 0644).ok());
  {
    absl::StatusOr<AtomicFile> f = AtomicFile::Create(tmp.Sub("f"), 0644);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Append("half of the new").ok());
    EXPECT_THAT(Names(tmp.path()), UnorderedElementsAre("f", ::testing::StartsWith("f.tmp-")));
    EXPECT_EQ(*ReadFile(tmp.Sub("f")), "old");
    AtomicFile moved = std::move(*f);  // the moved-from file must not remove the temp twice
    EXPECT_EQ(*ReadFile(moved.temp_path()), "half of the new");
  }
  EXPECT_EQ(*ReadFile(tmp.Sub("f")), "old");
  EXPECT_THAT(Names(tmp.path()), ElementsAre("f"));
}

TEST(AtomicFileTest, PositionedWritesThroughFdThenCommit) {
  TempDir tmp;
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(tmp.Sub("blob"), 0600);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(::pwrite(f->fd(), "world", 5, 6), 5);
  ASSERT_EQ(::pwrite(f->fd(), "hello ", 6, 0), 6);
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(f->Commit().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*ReadFile(tmp.Sub("blob")), "hello world");
  EXPECT_THAT(Names(tmp.path()), ElementsAre("blob"));
}

TEST(AtomicFileTest, SyncDirectoryNamesAMissingDirectory) {
  TempDir tmp;
  EXPECT_TRUE(SyncDirectory(tmp.path()).ok());
  absl::Status st = SyncDirectory(tmp.Sub("gone"));
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(tmp.Sub("gone")));
}

}  // namespace
}  // namespace lazypull
