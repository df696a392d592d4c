#include "server/metastore.h"

#include "gtest/gtest.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using testing::TempDir;

class MetaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = MetaStore::Open(dir_.Sub("metadata.db"));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  std::unique_ptr<MetaStore::Transaction> Txn() {
    auto t = store_->BeginTransaction();
    EXPECT_TRUE(t.ok()) << t.status();
    return std::move(*t);
  }
  TempDir dir_{"lpmeta"};
  std::unique_ptr<MetaStore> store_;
  absl::Time now_ = absl::FromUnixNanos(1700000000123456789);
};

TEST_F(MetaStoreTest, LifecycleAndCodes) {
  auto t = Txn();
  auto a = t->Create(SnapshotKind::kActive, "a", "", {{"x", "1"}, {"empty", ""}}, now_);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->info.labels, (Labels{{"x", "1"}}));
  EXPECT_TRUE(absl::IsAlreadyExists(t->Create(SnapshotKind::kView, "a", "", {}, now_).status()));
  EXPECT_TRUE(absl::IsNotFound(t->Create(SnapshotKind::kActive, "b", "zz", {}, now_).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(t->Create(SnapshotKind::kActive, "b", "a", {}, now_).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(t->Create(SnapshotKind::kCommitted, "b", "", {}, now_).status()));
  auto id = t->CommitActive("a", "c", SnapshotUsage{4096, 2}, {{"y", "2"}}, now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, a->id);
  auto child = t->Create(SnapshotKind::kActive, "child", "c", {}, now_);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(child->parent_ids, std::vector<int64_t>{a->id});
  EXPECT_TRUE(absl::IsFailedPrecondition(t->Remove("c").status()));
  EXPECT_TRUE(
      absl::IsFailedPrecondition(t->CommitActive("c", "d", {}, {}, now_).status()));  // not active
  EXPECT_TRUE(absl::IsAlreadyExists(t->CommitActive("child", "c", {}, {}, now_).status()));
  ASSERT_TRUE(t->Commit().ok());
  t.reset();  // one transaction at a time

  t = Txn();
  auto c = t->Get("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->info.kind, SnapshotKind::kCommitted);
  EXPECT_EQ(c->info.labels, (Labels{{"y", "2"}}));
  EXPECT_EQ(c->usage.size, 4096);
  EXPECT_EQ(c->usage.inodes, 2);
  EXPECT_EQ(c->info.created_at, now_);  // nanosecond precision kept
  EXPECT_TRUE(absl::IsNotFound(t->Get("a").status()));
  auto got_child = t->Get("child");
  EXPECT_EQ(got_child->info.parent, "c");
}

TEST_F(MetaStoreTest, RollbackOnDestructionAndDurableCommit) {
  {
    auto t = Txn();
    ASSERT_TRUE(t->Create(SnapshotKind::kActive, "lost", "", {}, now_).ok());
  }  // no Commit
  {
    auto t = Txn();
    EXPECT_TRUE(absl::IsNotFound(t->Get("lost").status()));
    ASSERT_TRUE(t->Create(SnapshotKind::kActive, "kept", "", {}, now_).ok());
    ASSERT_TRUE(t->Commit().ok());
  }
  store_.reset();
  auto reopened = MetaStore::Open(dir_.Sub("metadata.db"));
  ASSERT_TRUE(reopened.ok());
  auto t = (*reopened)->BeginTransaction();
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE((*t)->Get("kept").ok());
  auto ids = (*t)->Ids();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->size(), 1u);
}

TEST_F(MetaStoreTest, UpdateInfoPaths) {
  auto t = Txn();
  ASSERT_TRUE(t->Create(SnapshotKind::kActive, "a", "", {{"a", "1"}, {"b", "2"}}, now_).ok());
  SnapshotInfo in;
  in.name = "a";
  in.labels = {{"a", "9"}, {"c", "3"}};
  auto u = t->UpdateInfo(in, {"labels.a", "labels.b"}, now_ + absl::Seconds(1));
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->labels, (Labels{{"a", "9"}}));
  EXPECT_EQ(u->updated_at, now_ + absl::Seconds(1));
  EXPECT_EQ(u->created_at, now_);
  u = t->UpdateInfo(in, {}, now_);
  EXPECT_EQ(u->labels, in.labels);
  EXPECT_TRUE(absl::IsInvalidArgument(t->UpdateInfo(in, {"kind"}, now_).status()));
  in.labels = {{"big", std::string(4094, 'v')}};
  EXPECT_TRUE(absl::IsInvalidArgument(t->UpdateInfo(in, {"labels"}, now_).status()));
  in.name = "nope";
  EXPECT_TRUE(absl::IsNotFound(t->UpdateInfo(in, {}, now_).status()));
}

TEST_F(MetaStoreTest, OpaqueKeysAndListAll) {
  auto t = Txn();
  std::string long_key(4096, 'k');
  for (const std::string& key : {std::string("ns/1/../../etc"), std::string("a/b/c"), long_key,
                                 std::string("with\nnewline"), std::string("\xe2\x82\xac")}) {
    ASSERT_TRUE(t->Create(SnapshotKind::kActive, key, "", {}, now_).ok()) << key;
    auto got = t->Get(key);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->info.name, key);
  }
  ASSERT_TRUE(t->CommitActive("a/b/c", "base", {}, {}, now_).ok());
  ASSERT_TRUE(t->Create(SnapshotKind::kView, "v", "base", {{"l", "x"}}, now_).ok());
  auto all = t->ListAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 6u);
  EXPECT_EQ(all->back().info.name, "v");
  EXPECT_EQ(all->back().info.parent, "base");
  EXPECT_EQ(all->back().info.labels, (Labels{{"l", "x"}}));
  EXPECT_EQ(all->back().parent_ids.size(), 1u);
}

}  // namespace
}  // namespace lazypull
