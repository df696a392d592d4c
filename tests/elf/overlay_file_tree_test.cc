// OverlayFileTree over real lazy-layer indexes (eStargz blobs with whiteouts, an opaque
// directory and symlinks, read through LayerIndexFileTree), and a dependency walk across
// the layers of such an image.
#include "fetcher/elf/overlay_file_tree.h"

#include <map>
#include <span>
#include <string>
#include <vector>

#include "fetcher/elf/dependency_walk.h"
#include "fetcher/elf/layer_index_file_tree.h"
#include "fetcher/format/estargz_reader.h"
#include "gtest/gtest.h"
#include "tests/elf/synthetic_elf.h"
#include "tests/format/test_blob_builder.h"

namespace lazypull::elf {
namespace {

using format::testing::BuildEstargz;
using format::testing::TestEntry;

format::LayerIndex Index(const std::vector<TestEntry>& entries) {
  auto built = BuildEstargz(entries);
  auto reader = NewStringBlobReader(built.blob);
  auto index = format::ReadEstargzIndex(*reader, built.toc_digest);
  EXPECT_TRUE(index.ok()) << index.status();
  return std::move(*index);
}

TestEntry Entry(std::string name, char type, std::string data = "", std::string link = "") {
  TestEntry e;
  e.name = std::move(name);
  e.type = type;
  e.data = std::move(data);
  e.link = std::move(link);
  e.mode = type == '5' ? 0755 : 0644;
  return e;
}
TestEntry Dir(std::string name) { return Entry(std::move(name), '5'); }
TestEntry Reg(std::string name, std::string data) {
  return Entry(std::move(name), '0', std::move(data));
}
TestEntry Sym(std::string name, std::string target) {
  return Entry(std::move(name), '2', "", std::move(target));
}

testing::SyntheticElf Lib(std::vector<std::string> needed, std::string soname) {
  testing::SyntheticElf e;
  e.interp = "";
  e.needed = std::move(needed);
  e.soname = std::move(soname);
  e.runpath = "";
  e.padding = 16;
  return e;
}

TEST(OverlayFileTreeTest, WhiteoutsOpaqueDirectoriesAndShadowing) {
  format::LayerIndex base = Index({
      Dir("etc/"),
      Reg("etc/old.conf", "old"),
      Reg("etc/keep.conf", "keep"),
      Dir("opt/"),
      Dir("opt/app/"),
      Reg("opt/app/gone", "g"),
      Reg("opt/app/x", "lower x"),
      Dir("usr/"),
      Dir("usr/lib/"),
      Reg("usr/lib/libz.so.1", std::string(500, 'z')),
      Sym("lib", "usr/lib"),
      Dir("srv/"),
      Reg("srv/data", "d"),
  });
  format::LayerIndex top = Index({
      Dir("etc/"), Reg("etc/.wh.old.conf", ""),                       // deletes one file
      Dir("opt/"), Dir("opt/app/"), Reg("opt/app/.wh..wh..opq", ""),  // replaces the dir
      Reg("opt/app/x", "upper x"),
      Reg("srv", "now a file"),  // a file over a lower directory hides its contents
  });
  LayerIndexFileTree top_tree(&top);
  LayerIndexFileTree base_tree(&base);
  OverlayFileTree image({&top_tree, &base_tree});

  EXPECT_TRUE(top_tree.Lstat("/etc/old.conf")->whiteout);
  EXPECT_TRUE(top_tree.Lstat("/opt/app")->opaque);
  EXPECT_EQ(image.Lstat("/etc/old.conf").status().code(), absl::StatusCode::kNotFound);
  auto keep = image.Lstat("/etc/keep.conf");
  ASSERT_TRUE(keep.ok());
  EXPECT_EQ(keep->kind, FileNode::Kind::kRegular);
  EXPECT_EQ(keep->size, 4u);
  EXPECT_EQ(image.Lstat("/opt/app/gone").status().code(), absl::StatusCode::kNotFound);
  auto x = image.Lstat("/opt/app/x");
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->size, 7u);
  auto app = image.Lstat("/opt/app");
  ASSERT_TRUE(app.ok());
  EXPECT_FALSE(app->opaque);  // the merged view has no such thing
  EXPECT_EQ(image.Lstat("/srv")->kind, FileNode::Kind::kRegular);
  EXPECT_EQ(image.Lstat("/srv/data").status().code(), absl::StatusCode::kNotFound);
  // Symlinks of a lower layer resolve through the merged view.
  auto z = ResolvePath(image, "/lib/libz.so.1");
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->path, "/usr/lib/libz.so.1");
  EXPECT_EQ(z->node.size, 500u);
  EXPECT_EQ(ResolvePath(image, "/etc/old.conf").status().code(), absl::StatusCode::kNotFound);
  // A single layer's whiteout is not a file either.
  EXPECT_EQ(ResolvePath(top_tree, "/etc/old.conf").status().code(), absl::StatusCode::kNotFound);
}

TEST(OverlayFileTreeTest, WalkAcrossLayers) {
  testing::SyntheticElf exe = Lib({"libtop.so", "libbase.so"}, "");
  exe.interp = "/lib/ld.so";
  std::string exe_bytes = testing::BuildElf(exe);
  std::string ld = testing::BuildElf(Lib({}, "ld.so"));
  std::string libtop = testing::BuildElf(Lib({"libbase.so"}, "libtop.so"));
  std::string libbase = testing::BuildElf(Lib({}, "libbase.so"));
  std::string stale = testing::BuildElf(Lib({"libstale.so"}, "libtop.so"));
  format::LayerIndex base = Index({
      Dir("usr/"),
      Dir("usr/lib/"),
      Reg("usr/lib/ld.so", ld),
      Reg("usr/lib/libbase.so", libbase),
      Reg("usr/lib/libtop.so", stale),
      Sym("lib", "usr/lib"),
  });
  format::LayerIndex top = Index({
      Dir("usr/"), Dir("usr/bin/"), Reg("usr/bin/app", exe_bytes), Dir("usr/lib/"),
      Reg("usr/lib/libtop.so", libtop),  // replaces the base layer's copy
  });
  LayerIndexFileTree top_tree(&top);
  LayerIndexFileTree base_tree(&base);
  OverlayFileTree image({&top_tree, &base_tree});
  // Files by merged path; the test knows which layer's bytes each one has.
  std::map<std::string, std::string> bytes = {{"/usr/bin/app", exe_bytes},
                                              {"/usr/lib/ld.so", ld},
                                              {"/usr/lib/libtop.so", libtop},
                                              {"/usr/lib/libbase.so", libbase}};
  BatchReader read = [&](std::span<const ReadRequest> reqs) {
    std::vector<absl::StatusOr<std::string>> out;
    for (const ReadRequest& r : reqs) {
      out.push_back(bytes.at(r.path).substr(r.range.offset, r.range.length));
    }
    return out;
  };
  auto walk = WalkDependencies(image, "/usr/bin/app", read);
  ASSERT_TRUE(walk.ok()) << walk.status();
  std::vector<std::string> paths;
  for (const WalkObject& o : walk->objects) paths.push_back(o.real_path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/usr/bin/app", "/usr/lib/ld.so", "/usr/lib/libtop.so",
                                             "/usr/lib/libbase.so"}));
  EXPECT_TRUE(walk->problems.empty()) << walk->problems[0];  // libstale.so never looked for
  EXPECT_EQ(walk->rounds, 2);
}

}  // namespace
}  // namespace lazypull::elf
