// ResolvePath and LibraryResolver: ld.so's search order and symlink handling on a fake image
// tree, and on this machine's root compared with ldconfig and realpath.
#include "fetcher/elf/library_resolver.h"

#include <stdlib.h>

#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "fetcher/elf/abi.h"
#include "fetcher/elf/elf_parser.h"
#include "fetcher/elf/file_tree.h"
#include "fetcher/elf/ld_so_cache.h"
#include "gtest/gtest.h"
#include "tests/elf/elf_test_util.h"

namespace lazypull::elf {
namespace {

using testing::ReadWholeFile;

const std::string kRoot = LAZYPULL_ELF_TEST_ROOT;

// An image tree in memory: regular files, directories (implied by paths) and symlinks.
class FakeTree : public FileTree {
 public:
  void File(const std::string& path, uint64_t size = 100) {
    nodes_[path] = FileNode::Regular(size);
    Dirs(path);
  }
  void Link(const std::string& path, const std::string& target) {
    nodes_[path] = FileNode::Symlink(target);
    Dirs(path);
  }
  absl::StatusOr<FileNode> Lstat(std::string_view path) const override {
    ++lstats;
    if (path == "/") return FileNode::Directory();
    auto it = nodes_.find(std::string(path));
    if (it == nodes_.end()) return absl::NotFoundError(std::string(path));
    return it->second;
  }
  mutable int lstats = 0;

 private:
  void Dirs(const std::string& path) {
    for (size_t i = path.find('/', 1); i != std::string::npos; i = path.find('/', i + 1)) {
      nodes_.emplace(path.substr(0, i), FileNode::Directory());
    }
  }
  std::map<std::string, FileNode> nodes_;
};

LoaderObject Loader(std::string origin, std::optional<std::string> rpath = std::nullopt,
                    std::optional<std::string> runpath = std::nullopt, bool nodeflib = false) {
  return LoaderObject{std::move(origin), std::move(rpath), std::move(runpath), nodeflib};
}

Abi X8664() {
  ElfInfo info;
  info.is_64 = true;
  info.machine = kEmX8664;
  return AbiForElf(info);
}

TEST(ResolvePathTest, SymlinksStayInsideTheTree) {
  FakeTree t;
  t.File("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
  t.Link("/usr/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13");
  t.Link("/lib", "usr/lib");
  t.Link("/lib64", "/usr/lib64");
  t.Link("/usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  t.File("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 200);
  t.Link("/escape", "../../../../../usr/lib/x86_64-linux-gnu/libz.so.1");
  t.Link("/loop1", "loop2");
  t.Link("/loop2", "/loop1");
  t.File("/etc/passwd");

  auto z = ResolvePath(t, "/lib/x86_64-linux-gnu/libz.so.1");
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->path, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
  EXPECT_EQ(z->node.kind, FileNode::Kind::kRegular);
  auto ld = ResolvePath(t, "/lib64/ld-linux-x86-64.so.2");
  ASSERT_TRUE(ld.ok()) << ld.status();
  EXPECT_EQ(ld->path, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  EXPECT_EQ(ld->node.size, 200u);
  // ".." at the root stays at the root, as under chroot.
  auto esc = ResolvePath(t, "/escape");
  ASSERT_TRUE(esc.ok()) << esc.status();
  EXPECT_EQ(esc->path, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
  auto dots = ResolvePath(t, "//usr/./lib/../../../usr/lib//x86_64-linux-gnu/libz.so.1");
  ASSERT_TRUE(dots.ok()) << dots.status();
  EXPECT_EQ(dots->path, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
  EXPECT_EQ(ResolvePath(t, "/loop1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResolvePath(t, "/nope/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolvePath(t, "/etc/passwd/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolvePath(t, "relative").status().code(), absl::StatusCode::kInvalidArgument);
  auto root = ResolvePath(t, "/..");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->path, "/");
}

TEST(LibraryResolverTest, SearchOrderFollowsLdSo) {
  FakeTree t;
  t.File("/opt/app/rpath/libx.so");
  t.File("/opt/app/runpath/libx.so");
  t.File("/opt/exe-rpath/libx.so");
  t.File("/opt/exe-rpath/liby.so");
  t.File("/lib/x86_64-linux-gnu/libx.so");
  t.File("/lib/x86_64-linux-gnu/liby.so");
  t.File("/usr/lib/libz.so");
  t.File("/lib64/libw.so");
  LibraryResolver r(&t, nullptr, X8664());
  LoaderObject exe = Loader("/opt/bin", "/opt/exe-rpath");

  // RPATH of the loading object first.
  LoaderObject lib = Loader("/opt/app", "$ORIGIN/rpath:/nonexistent");
  std::vector<LoaderObject> chain = {lib, exe};
  auto x = r.Resolve("libx.so", chain);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->path, "/opt/app/rpath/libx.so");
  EXPECT_EQ(x->source, LibrarySource::kRpath);
  // Then the RPATH of its loader (the executable).
  auto y = r.Resolve("liby.so", chain);
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->path, "/opt/exe-rpath/liby.so");
  EXPECT_EQ(y->source, LibrarySource::kRpath);

  // With a RUNPATH, no RPATH is used (not even the executable's); RUNPATH before defaults.
  LoaderObject run = Loader("/opt/app", std::nullopt, "${ORIGIN}/runpath");
  std::vector<LoaderObject> chain2 = {run, exe};
  auto x2 = r.Resolve("libx.so", chain2);
  ASSERT_TRUE(x2.ok());
  EXPECT_EQ(x2->path, "/opt/app/runpath/libx.so");
  EXPECT_EQ(x2->source, LibrarySource::kRunpath);
  auto y2 = r.Resolve("liby.so", chain2);
  ASSERT_TRUE(y2.ok());
  EXPECT_EQ(y2->path, "/lib/x86_64-linux-gnu/liby.so");
  EXPECT_EQ(y2->source, LibrarySource::kDefaultDir);
  // Default directories: multiarch, lib64, then plain.
  auto z = r.Resolve("libz.so", chain2);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->path, "/usr/lib/libz.so");
  auto w = r.Resolve("libw.so", chain2);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->path, "/lib64/libw.so");
  // All candidates, in order.
  auto all = r.Candidates("libx.so", chain, 8);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].path, "/opt/app/rpath/libx.so");
  EXPECT_EQ((*all)[1].path, "/opt/exe-rpath/libx.so");
  EXPECT_EQ((*all)[2].path, "/lib/x86_64-linux-gnu/libx.so");
  auto first = r.Candidates("libx.so", chain, 1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 1u);
  // DF_1_NODEFLIB: neither cache nor default directories.
  LoaderObject nodef = Loader("/opt/app", std::nullopt, std::nullopt, true);
  std::vector<LoaderObject> chain3 = {nodef};
  EXPECT_EQ(r.Resolve("libz.so", chain3).status().code(), absl::StatusCode::kNotFound);
  // A name with a slash is a path ($ORIGIN expanded), relative to "/".
  auto p = r.Resolve("$ORIGIN/rpath/libx.so", chain);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->path, "/opt/app/rpath/libx.so");
  EXPECT_EQ(p->source, LibrarySource::kPath);
  auto rel = r.Resolve("usr/lib/libz.so", chain);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->real_path, "/usr/lib/libz.so");
  EXPECT_EQ(r.Resolve("/opt/none.so", chain).status().code(), absl::StatusCode::kNotFound);
}

TEST(LibraryResolverTest, TokensAndSkippedElements) {
  FakeTree t;
  LibraryResolver r(&t, nullptr, X8664());
  EXPECT_EQ(r.ExpandTokens("$ORIGIN/../$LIB/${PLATFORM}/x", "/a/b"),
            "/a/b/../lib/x86_64-linux-gnu/x86_64/x");
  EXPECT_EQ(r.ExpandTokens("/x/$ORIGINAL/$HOME/${", "/o"), "/x/$ORIGINAL/$HOME/${");
  ElfInfo unknown;
  unknown.is_64 = true;
  unknown.machine = 9999;
  LibraryResolver u(&t, nullptr, AbiForElf(unknown));
  EXPECT_FALSE(u.ExpandTokens("/a/$PLATFORM", "/").has_value());
  EXPECT_EQ(u.ExpandTokens("/a/$LIB", "/"), "/a/lib64");
  // A relative RPATH element or one with an unknown token is skipped, not guessed.
  t.File("/lib/libq.so");
  t.File("/rel/libq.so");
  LoaderObject lib = Loader("/o", "rel::/${PLATFORM}");
  std::vector<LoaderObject> chain = {lib};
  auto q = u.Resolve("libq.so", chain);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->path, "/lib/libq.so");
}

TEST(LibraryResolverTest, CacheFirstThenDefaultsWhenStale) {
  FakeTree t;
  t.File("/opt/cached/libc.so.6");
  t.File("/lib/x86_64-linux-gnu/libc.so.6");
  t.File("/lib/x86_64-linux-gnu/libgone.so.1");
  // A cache that maps libc.so.6 to /opt/cached and libgone.so.1 to a file that is gone.
  std::string cache_bytes;
  {
    // New-format cache with two x86-64 entries.
    std::vector<std::pair<std::string, std::string>> e = {{"libc.so.6", "/opt/cached/libc.so.6"},
                                                          {"libgone.so.1", "/gone/libgone.so.1"}};
    cache_bytes = "glibc-ld.so.cache1.1";
    cache_bytes.resize(48 + 24 * e.size(), '\0');
    cache_bytes[20] = static_cast<char>(e.size());
    cache_bytes[28] = 2;
    for (size_t i = 0; i < e.size(); ++i) {
      size_t at = 48 + 24 * i;
      cache_bytes[at] = 0x03;
      cache_bytes[at + 1] = 0x03;
      uint32_t key = static_cast<uint32_t>(cache_bytes.size());
      cache_bytes += e[i].first + '\0';
      uint32_t value = static_cast<uint32_t>(cache_bytes.size());
      cache_bytes += e[i].second + '\0';
      for (int b = 0; b < 4; ++b) {
        cache_bytes[at + 4 + b] = static_cast<char>(key >> (8 * b));
        cache_bytes[at + 8 + b] = static_cast<char>(value >> (8 * b));
      }
    }
  }
  auto cache = LdSoCache::Parse(cache_bytes);
  ASSERT_TRUE(cache.ok()) << cache.status();
  LibraryResolver r(&t, &*cache, X8664());
  std::vector<LoaderObject> chain = {Loader("/usr/bin")};
  auto libc = r.Resolve("libc.so.6", chain);
  ASSERT_TRUE(libc.ok());
  EXPECT_EQ(libc->path, "/opt/cached/libc.so.6");
  EXPECT_EQ(libc->source, LibrarySource::kCache);
  auto gone = r.Resolve("libgone.so.1", chain);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->path, "/lib/x86_64-linux-gnu/libgone.so.1");
  EXPECT_EQ(gone->source, LibrarySource::kDefaultDir);
}

std::string RealPath(const std::string& path) {
  char* r = realpath(path.c_str(), nullptr);
  EXPECT_NE(r, nullptr) << path;
  std::string out = r ? r : "";
  free(r);
  return out;
}

TEST(LibraryResolverTest, ThisMachineAgreesWithLdconfigAndRealpath) {
  LocalFileTree tree("/");
  auto cache = LdSoCache::Parse(ReadWholeFile("/etc/ld.so.cache"));
  ASSERT_TRUE(cache.ok());
  LibraryResolver r(&tree, &*cache, X8664());
  std::vector<LoaderObject> chain = {Loader("/usr/bin")};
  auto libc = r.Resolve("libc.so.6", chain);
  ASSERT_TRUE(libc.ok()) << libc.status();
  EXPECT_EQ(libc->source, LibrarySource::kCache);
  std::string text = testing::RunTool({"ldconfig", "-p"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(\tlibc\.so\.6 \(libc6,x86-64\) => (\S+))")));
  EXPECT_EQ(libc->path, m[1].str());
  EXPECT_EQ(libc->real_path, RealPath(m[1].str()));
  auto interp = ResolvePath(tree, "/lib64/ld-linux-x86-64.so.2");
  ASSERT_TRUE(interp.ok()) << interp.status();
  EXPECT_EQ(interp->path, RealPath("/lib64/ld-linux-x86-64.so.2"));

  // The test libraries: RUNPATH and RPATH $ORIGIN/../lib find libelfdep.so.
  LocalFileTree root(kRoot);
  LibraryResolver local(&root, nullptr, X8664());
  for (const char* name : {"libelfrunpath.so", "libelfrpath.so"}) {
    std::string data = ReadWholeFile(kRoot + "/app/" + name);
    auto info = ParseElf(data, data.size());
    ASSERT_TRUE(info.ok());
    std::vector<LoaderObject> c = {Loader("/app", info->rpath, info->runpath)};
    auto dep = local.Resolve("libelfdep.so", c);
    ASSERT_TRUE(dep.ok()) << dep.status();
    EXPECT_EQ(dep->path, "/app/../lib/libelfdep.so");
    EXPECT_EQ(dep->real_path, "/lib/libelfdep.so");
    EXPECT_EQ(dep->source, info->runpath ? LibrarySource::kRunpath : LibrarySource::kRpath);
  }
}

}  // namespace
}  // namespace lazypull::elf
