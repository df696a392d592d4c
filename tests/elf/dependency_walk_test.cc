// WalkDependencies on this machine's executables (compared with ldd), on the DT_NEEDED loop
// built by CMake, and on synthetic images for the cases a real root cannot show.
#include "fetcher/elf/dependency_walk.h"

#include <stdlib.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "fetcher/elf/file_tree.h"
#include "gtest/gtest.h"
#include "tests/elf/elf_test_util.h"

namespace lazypull::elf {
namespace {

using testing::BuildElf;
using testing::ReadWholeFile;
using testing::SyntheticElf;

const std::string kRoot = LAZYPULL_ELF_TEST_ROOT;

std::string RealPath(const std::string& path) {
  char* r = realpath(path.c_str(), nullptr);
  EXPECT_NE(r, nullptr) << path;
  std::string out = r ? r : "";
  free(r);
  return out;
}

// Reads files of the local root, counting rounds and requests.
struct LocalReader {
  int calls = 0;
  size_t requests = 0;
  BatchReader Reader(const std::string& root = "") {
    return [this, root](std::span<const ReadRequest> reqs) {
      ++calls;
      requests += reqs.size();
      std::vector<absl::StatusOr<std::string>> out;
      for (const ReadRequest& r : reqs) {
        std::string data = ReadWholeFile(root + r.path);
        if (r.range.end() > data.size()) {
          out.push_back(absl::OutOfRangeError(r.path));
        } else {
          out.push_back(data.substr(r.range.offset, r.range.length));
        }
      }
      return out;
    };
  }
};

// The real paths ldd lists for `exe` (interpreter and libraries; not the vDSO).
std::set<std::string> LddRealPaths(const std::string& exe) {
  std::string text = testing::RunTool({"ldd", exe});
  std::set<std::string> out;
  std::regex re(R"((?:=> |\t)(/\S+) \(0x)");
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
    out.insert(RealPath((*it)[1]));
  }
  return out;
}

void ExpectSameAsLdd(const std::string& exe) {
  LocalFileTree tree("/");
  LocalReader reader;
  auto walk = WalkDependencies(tree, exe, reader.Reader());
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_TRUE(walk->problems.empty()) << walk->problems[0];
  EXPECT_FALSE(walk->truncated);
  EXPECT_TRUE(walk->used_ld_so_cache);
  ASSERT_FALSE(walk->objects.empty());
  EXPECT_EQ(walk->objects[0].real_path, RealPath(exe));
  EXPECT_EQ(walk->objects[0].depth, 0);
  std::set<std::string> found;
  int max_depth = 0;
  for (size_t i = 1; i < walk->objects.size(); ++i) {
    const WalkObject& o = walk->objects[i];
    EXPECT_TRUE(found.insert(o.real_path).second) << "twice: " << o.real_path;
    EXPECT_GE(o.loader, 0);
    EXPECT_LT(o.loader, static_cast<int>(i));
    EXPECT_EQ(o.depth, walk->objects[o.loader].depth + 1);
    EXPECT_TRUE(o.info.complete());
    max_depth = std::max(max_depth, o.depth);
  }
  EXPECT_EQ(found, LddRealPaths(exe));
  EXPECT_EQ(walk->objects[1].needed_as, "PT_INTERP");
  // A level costs a head read and at most a few more rounds, never one per file.
  EXPECT_LE(walk->rounds, 3 * (max_depth + 1));
  EXPECT_EQ(reader.calls, walk->rounds);
}

TEST(DependencyWalkTest, LsMatchesLdd) { ExpectSameAsLdd("/bin/ls"); }

TEST(DependencyWalkTest, PythonMatchesLdd) { ExpectSameAsLdd("/usr/bin/python3"); }

TEST(DependencyWalkTest, NeededLoopEnds) {
  LocalFileTree tree("/");
  LocalReader reader;
  const std::string a = kRoot + "/loop/libelfloop_a.so";
  const std::string b = kRoot + "/loop/libelfloop_b.so";
  auto walk = WalkDependencies(tree, a, reader.Reader());
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_TRUE(walk->problems.empty()) << walk->problems[0];
  std::vector<std::string> paths;
  for (const WalkObject& o : walk->objects) paths.push_back(o.real_path);
  ASSERT_GE(paths.size(), 3u);
  EXPECT_EQ(paths[0], RealPath(a));
  // Found by path, not position: a sanitizer build puts its runtime first in DT_NEEDED.
  auto it = std::find(paths.begin(), paths.end(), RealPath(b));
  ASSERT_NE(it, paths.end());
  const WalkObject& lib_b = walk->objects[it - paths.begin()];
  EXPECT_EQ(lib_b.needed_as, "libelfloop_b.so");
  EXPECT_EQ(lib_b.depth, 1);
  EXPECT_NE(std::find(lib_b.info.needed.begin(), lib_b.info.needed.end(), "libelfloop_a.so"),
            lib_b.info.needed.end());  // the way back
  std::set<std::string> unique(paths.begin(), paths.end());
  EXPECT_EQ(unique.size(), paths.size());
  EXPECT_NE(unique.count(RealPath("/lib/x86_64-linux-gnu/libc.so.6")), 0u);
}

TEST(DependencyWalkTest, StaticBinaryIsOneObject) {
  LocalFileTree tree("/");
  LocalReader reader;
  auto walk = WalkDependencies(tree, "/bin/busybox", reader.Reader());
  ASSERT_TRUE(walk.ok()) << walk.status();
  ASSERT_EQ(walk->objects.size(), 1u);
  EXPECT_TRUE(walk->objects[0].info.is_static());
  EXPECT_TRUE(walk->problems.empty());
  EXPECT_EQ(walk->rounds, 1);  // the head and the ld.so.cache, together
  EXPECT_EQ(reader.requests, 2u);
}

TEST(DependencyWalkTest, GivenCacheIsNotReadAgain) {
  LocalFileTree tree("/");
  auto cache = LdSoCache::Parse(ReadWholeFile("/etc/ld.so.cache"));
  ASSERT_TRUE(cache.ok());
  WalkOptions options;
  options.ld_so_cache = &*cache;
  LocalReader reader;
  auto walk = WalkDependencies(tree, "/bin/busybox", reader.Reader(), options);
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_TRUE(walk->used_ld_so_cache);
  EXPECT_EQ(reader.requests, 1u);  // the head only
  auto ls = WalkDependencies(tree, "/bin/ls", reader.Reader(), options);
  ASSERT_TRUE(ls.ok()) << ls.status();
  EXPECT_TRUE(ls->problems.empty());
  EXPECT_EQ(ls->objects.size(), LddRealPaths("/bin/ls").size() + 1);
}

TEST(DependencyWalkTest, NonElfAndMissingExecutables) {
  LocalFileTree tree("/");
  LocalReader reader;
  EXPECT_EQ(WalkDependencies(tree, "/etc/passwd", reader.Reader()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WalkDependencies(tree, "/usr/bin/ldd", reader.Reader()).status().code(),
            absl::StatusCode::kInvalidArgument);  // a shell script
  EXPECT_EQ(WalkDependencies(tree, "/no/such/exe", reader.Reader()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(WalkDependencies(tree, "/usr/bin", reader.Reader()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DependencyWalkTest, BoundsTruncate) {
  LocalFileTree tree("/");
  LocalReader reader;
  WalkOptions options;
  options.max_objects = 2;
  auto walk = WalkDependencies(tree, "/usr/bin/python3", reader.Reader(), options);
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_TRUE(walk->truncated);
  EXPECT_EQ(walk->objects.size(), 2u);
  WalkOptions shallow;
  shallow.max_depth = 0;
  auto one = WalkDependencies(tree, "/bin/ls", reader.Reader(), shallow);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->truncated);
  EXPECT_EQ(one->objects.size(), 1u);
}

// An image in memory: file bytes and symlinks.
class MemoryImage : public FileTree {
 public:
  void File(const std::string& path, std::string data) {
    Dirs(path);
    files_[path] = std::move(data);
  }
  void Link(const std::string& path, std::string target) {
    Dirs(path);
    links_[path] = std::move(target);
  }
  absl::StatusOr<FileNode> Lstat(std::string_view p) const override {
    std::string path(p);
    if (path == "/" || dirs_.contains(path)) return FileNode::Directory();
    if (auto f = files_.find(path); f != files_.end()) {
      return FileNode::Regular(f->second.size());
    }
    if (auto l = links_.find(path); l != links_.end()) {
      return FileNode::Symlink(l->second);
    }
    return absl::NotFoundError(path);
  }
  BatchReader Reader() {
    return [this](std::span<const ReadRequest> reqs) {
      ++rounds;
      std::vector<absl::StatusOr<std::string>> out;
      for (const ReadRequest& r : reqs) {
        read_paths.push_back(r.path);
        out.push_back(files_.at(r.path).substr(r.range.offset, r.range.length));
      }
      return out;
    };
  }
  int rounds = 0;
  std::vector<std::string> read_paths;

 private:
  void Dirs(const std::string& path) {
    for (size_t i = path.find('/', 1); i != std::string::npos; i = path.find('/', i + 1)) {
      dirs_.insert(path.substr(0, i));
    }
  }
  std::map<std::string, std::string> files_;
  std::map<std::string, std::string> links_;
  std::set<std::string> dirs_;
};

std::string Elf(std::vector<std::string> needed, std::string soname, uint16_t machine = 62,
                bool is_64 = true, std::string interp = "", std::string runpath = "") {
  SyntheticElf e;
  e.machine = machine;
  e.is_64 = is_64;
  e.interp = std::move(interp);
  e.needed = std::move(needed);
  e.soname = std::move(soname);
  e.runpath = std::move(runpath);
  e.padding = 100;
  return BuildElf(e);
}

TEST(DependencyWalkTest, SkipsWrongClassAndMatchesSonames) {
  MemoryImage img;
  img.File("/usr/bin/app", Elf({"libq.so", "libloop1.so"}, "", 62, true, "/lib/ld.so"));
  img.File("/lib/ld.so", Elf({}, "ld.so"));
  // A 32-bit libq.so comes first in the search; ld.so passes over it.
  img.File("/lib/x86_64-linux-gnu/libq.so", Elf({}, "libq.so", 3, false));
  img.File("/usr/lib/libq.so", Elf({"ld.so"}, "libq.so"));
  // libloop1 → libloop2 → libloop1 (by soname), and libloop2 also names itself.
  img.File("/usr/lib/libloop1.so.1.0", Elf({"libloop2.so"}, "libloop1.so"));
  img.Link("/usr/lib/libloop1.so", "libloop1.so.1.0");
  img.File("/usr/lib/libloop2.so",
           Elf({"libloop1.so", "libloop2.so", "libmissing.so"}, "libloop2.so"));
  auto walk = WalkDependencies(img, "/usr/bin/app", img.Reader());
  ASSERT_TRUE(walk.ok()) << walk.status();
  std::vector<std::string> paths;
  for (const WalkObject& o : walk->objects) paths.push_back(o.real_path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/usr/bin/app", "/lib/ld.so", "/usr/lib/libq.so",
                                             "/usr/lib/libloop1.so.1.0", "/usr/lib/libloop2.so"}));
  EXPECT_EQ(walk->objects[3].path, "/usr/lib/libloop1.so");
  EXPECT_EQ(walk->objects[4].depth, 2);
  EXPECT_EQ(walk->objects[4].loader, 3);
  ASSERT_EQ(walk->problems.size(), 1u);
  EXPECT_NE(walk->problems[0].find("libmissing.so"), std::string::npos) << walk->problems[0];
  EXPECT_FALSE(walk->used_ld_so_cache);  // the image has none
  // Levels: app (1 round) | ld.so, libq (32-bit then 64-bit), libloop1 | libloop2.
  EXPECT_EQ(walk->rounds, 4);
}

TEST(DependencyWalkTest, RunpathOriginAndInterpreterSymlink) {
  MemoryImage img;
  img.File("/opt/app/bin/tool",
           Elf({"libpriv.so"}, "", 62, true, "/lib64/ld-linux-x86-64.so.2", "$ORIGIN/../lib"));
  img.Link("/lib64", "usr/lib64");
  img.Link("/usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  img.File("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Elf({}, "ld-linux-x86-64.so.2"));
  img.File("/opt/app/lib/libpriv.so", Elf({"ld-linux-x86-64.so.2"}, "libpriv.so"));
  img.Link("/usr/bin/tool", "../../opt/app/bin/tool");
  auto walk = WalkDependencies(img, "/usr/bin/tool", img.Reader());
  ASSERT_TRUE(walk.ok()) << walk.status();
  ASSERT_EQ(walk->objects.size(), 3u);
  // $ORIGIN of the executable is its real directory, as ld.so gets it from /proc/self/exe.
  EXPECT_EQ(walk->objects[0].real_path, "/opt/app/bin/tool");
  EXPECT_EQ(walk->objects[1].real_path, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
  EXPECT_EQ(walk->objects[2].path, "/opt/app/bin/../lib/libpriv.so");
  EXPECT_EQ(walk->objects[2].real_path, "/opt/app/lib/libpriv.so");
  EXPECT_TRUE(walk->problems.empty()) << walk->problems[0];
}

}  // namespace
}  // namespace lazypull::elf
