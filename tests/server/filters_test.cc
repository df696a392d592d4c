#include "server/filters.h"

#include "gtest/gtest.h"

namespace lazypull {
namespace {

SnapshotInfo Info(std::string name, std::string parent, SnapshotKind kind, Labels labels = {}) {
  SnapshotInfo i;
  i.name = std::move(name);
  i.parent = std::move(parent);
  i.kind = kind;
  i.labels = std::move(labels);
  return i;
}

bool Matches(const std::vector<std::string>& filters, const SnapshotInfo& info) {
  absl::StatusOr<SnapshotFilter> f = SnapshotFilter::Parse(filters);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() && f->Match(info);
}

TEST(SnapshotFilterTest, FieldsAndOperators) {
  SnapshotInfo a = Info("ns/1/a", "ns/1/base", SnapshotKind::kActive,
                        {{"containerd.io/snapshot.ref", "sha256:x"}, {"k.dotted", "v"}});
  EXPECT_TRUE(Matches({}, a));
  EXPECT_TRUE(Matches({""}, a));
  EXPECT_TRUE(Matches({"kind==active"}, a));
  EXPECT_FALSE(Matches({"kind==committed"}, a));
  EXPECT_TRUE(Matches({"name==\"ns/1/a\""}, a));
  EXPECT_TRUE(Matches({"name==ns/1/a"}, a));  // unquoted values run to ',' or space
  EXPECT_TRUE(Matches({"parent==ns/1/base"}, a));
  EXPECT_TRUE(Matches({"parent!=\"\""}, a));
  EXPECT_FALSE(Matches({"parent!=\"\""}, Info("b", "", SnapshotKind::kCommitted)));
  EXPECT_TRUE(Matches({"labels.\"containerd.io/snapshot.ref\"==sha256:x"}, a));
  EXPECT_TRUE(Matches({"labels.\"containerd.io/snapshot.ref\""}, a));
  EXPECT_FALSE(Matches({"labels.missing"}, a));
  EXPECT_TRUE(Matches({"labels.k.dotted==v"}, a));  // unquoted path parts join with '.'
  EXPECT_TRUE(Matches({"labels.missing!=x"}, a));   // absent compares as ""
  EXPECT_TRUE(Matches({"name~=^ns/1"}, a));
  EXPECT_TRUE(Matches({"name~=/^ns\\/1/"}, a));
  EXPECT_TRUE(Matches({"kind==active,parent==ns/1/base"}, a));
  EXPECT_FALSE(Matches({"kind==active,parent==other"}, a));
  EXPECT_TRUE(Matches({"kind==view", "name==ns/1/a"}, a));
  EXPECT_TRUE(Matches({" kind == active , name == ns/1/a "}, a));
  EXPECT_FALSE(Matches({"unknownfield"}, a));
}

TEST(SnapshotFilterTest, SyntaxErrorsAreInvalidArgument) {
  for (const char* bad : {"name==", "kind=active", "kind<>x", ",", "name==\"unterminated",
                          "labels.", "name==a,", "name==a b", "name~=/[/"}) {
    absl::StatusOr<SnapshotFilter> f = SnapshotFilter::Parse({bad});
    EXPECT_TRUE(absl::IsInvalidArgument(f.status())) << bad << " -> " << f.status();
  }
}

}  // namespace
}  // namespace lazypull
