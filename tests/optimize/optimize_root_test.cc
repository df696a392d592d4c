// Root tests of the OS-facing parts of `convert --optimize` on real kernels parts: the layer
// unpacker (GNU tar + whiteouts in overlay form, stacked in a real overlay mount), the
// fanotify recorder on an overlay, and the child-process helper.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tools/optimize/access_recorder.h"
#include "tools/optimize/child_process.h"
#include "tools/optimize/layer_unpacker.h"
#include "tools/optimize/overlay_mount.h"

namespace lazypull::optimize {
namespace {

using testing::RunShell;
using testing::TempDir;

// Writes a tar with Python's tarfile: `body` adds members to `t` (helpers f, d, l, h).
void PyTar(const std::string& path, const std::string& body) {
  std::string script = absl::StrCat(
      "import io, tarfile\n", "t = tarfile.open('", path, "', 'w', format=tarfile.PAX_FORMAT)\n",
      "def add(i, data=b''):\n", "    i.mtime = 1700000000\n", "    i.size = len(data)\n",
      "    t.addfile(i, io.BytesIO(data))\n", "def f(n, data, mode=0o644):\n",
      "    i = tarfile.TarInfo(n); i.mode = mode; add(i, data)\n", "def d(n):\n",
      "    i = tarfile.TarInfo(n); i.type = tarfile.DIRTYPE; i.mode = 0o755; add(i)\n",
      "def l(n, target):\n",
      "    i = tarfile.TarInfo(n); i.type = tarfile.SYMTYPE; i.linkname = target; add(i)\n",
      "def h(n, target):\n",
      "    i = tarfile.TarInfo(n); i.type = tarfile.LNKTYPE; i.linkname = target; add(i)\n", body,
      "t.close()\n");
  auto r = RunShell("python3 - <<'PY'\n" + script + "PY\n");
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
}

absl::StatusOr<UnpackedLayer> Unpack(const std::string& tar, const std::string& dir,
                                     const std::string& scratch) {
  ::mkdir(dir.c_str(), 0755);
  auto blob = NewFileBlobReader(tar);
  if (!blob.ok()) return blob.status();
  UnpackOptions options;
  options.scratch_prefix = scratch;
  return UnpackLayer(**blob, dir, tar, options);
}

TEST(LayerUnpackerTest, WhiteoutsAndOpaqueDirsStackInARealOverlay) {
  TempDir t("lpopt");
  PyTar(t.Sub("base.tar"),
        "d('etc'); f('etc/a.conf', b'a\\n'); f('etc/gone', b'x'); d('old'); f('old/x', b'x');\n"
        "f('bin/tool', b'#!', 0o755); h('bin/tool2', 'bin/tool'); l('bin/sh', 'tool');\n");
  PyTar(t.Sub("top.tar"),
        "d('etc'); f('etc/.wh.gone', b''); d('old'); f('old/.wh..wh..opq', b'');\n"
        "f('old/new', b'n'); f('etc/.wh.a.conf', b''); f('etc/a.conf', b'kept\\n');\n");
  auto base = Unpack(t.Sub("base.tar"), t.Sub("l0"), t.Sub("s0"));
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->regular_files,
            (std::set<std::string>{"bin/tool", "bin/tool2", "etc/a.conf", "etc/gone", "old/x"}));
  auto top = Unpack(t.Sub("top.tar"), t.Sub("l1"), t.Sub("s1"));
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->regular_files, (std::set<std::string>{"etc/a.conf", "old/new"}));
  struct stat st;
  ASSERT_EQ(::lstat(t.Sub("l1/etc/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char value[8] = {};
  EXPECT_EQ(::lgetxattr(t.Sub("l1/old").c_str(), "trusted.overlay.opaque", value, sizeof(value)),
            1);
  EXPECT_EQ(value[0], 'y');
  // The layer's own a.conf survives its whiteout; whiteout files themselves are not extracted.
  EXPECT_EQ(*testing::ReadFile(t.Sub("l1/etc/a.conf")), "kept\n");
  EXPECT_NE(::access(t.Sub("l1/etc/.wh.gone").c_str(), F_OK), 0);
  EXPECT_NE(::access(t.Sub("l0/.wh..wh..opq").c_str(), F_OK), 0);
  // The scratch tar and tar's log are gone.
  EXPECT_NE(::access(t.Sub("s0.tar").c_str(), F_OK), 0);

  ASSERT_EQ(::mkdir(t.Sub("upper").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(t.Sub("work").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(t.Sub("root").c_str(), 0755), 0);
  auto mount =
      OverlayMount::Mount({t.Sub("l1"), t.Sub("l0")}, t.Sub("upper"), t.Sub("work"), t.Sub("root"));
  ASSERT_TRUE(mount.ok()) << mount.status();
  auto listing = RunShell("cd " + t.Sub("root") + " && find . | sort | tr '\\n' ' '");
  ASSERT_TRUE(listing.ok());
  EXPECT_EQ(listing->output,
            ". ./bin ./bin/sh ./bin/tool ./bin/tool2 ./etc ./etc/a.conf ./old ./old/new ");
  EXPECT_EQ(*testing::ReadFile(t.Sub("root/etc/a.conf")), "kept\n");
  ASSERT_TRUE((*mount)->Unmount().ok());
}

TEST(LayerUnpackerTest, WhiteoutInADirectoryTheTarDoesNotListCreatesIt) {
  TempDir t("lpopt");
  PyTar(t.Sub("w.tar"), "f('deep/er/.wh.y', b'');\n");
  auto r = Unpack(t.Sub("w.tar"), t.Sub("l0"), t.Sub("s0"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->regular_files.empty());
  struct stat st;
  ASSERT_EQ(::lstat(t.Sub("l0/deep/er").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::lstat(t.Sub("l0/deep/er/y").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
}

TEST(LayerUnpackerTest, WhiteoutsNeverFollowTheLayersSymlinks) {
  TempDir t("lpopt");
  const std::string outside = t.Sub("outside");
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  PyTar(t.Sub("evil.tar"), "l('esc', '" + outside + "'); f('esc/.wh.victim', b'');\n");
  auto r = Unpack(t.Sub("evil.tar"), t.Sub("l0"), t.Sub("s0"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(::access((outside + "/victim").c_str(), F_OK), 0);
}

TEST(LayerUnpackerTest, DiffIdMismatchAndCorruptInputAreDataLoss) {
  TempDir t("lpopt");
  PyTar(t.Sub("a.tar"), "f('a', b'a');\n");
  ASSERT_EQ(RunShell("gzip -k " + t.Sub("a.tar"))->exit_code, 0);
  ::mkdir(t.Sub("l").c_str(), 0755);
  auto blob = NewFileBlobReader(t.Sub("a.tar.gz"));
  ASSERT_TRUE(blob.ok());
  UnpackOptions options;
  options.scratch_prefix = t.Sub("s");
  options.expected_diff_id = Digest::Of("something else");
  EXPECT_EQ(UnpackLayer(**blob, t.Sub("l"), "a", options).status().code(),
            absl::StatusCode::kDataLoss);
  auto gz = testing::ReadFile(t.Sub("a.tar.gz"));
  ASSERT_TRUE(testing::WriteFile(t.Sub("cut.gz"), gz->substr(0, gz->size() / 2)).ok());
  auto cut = NewFileBlobReader(t.Sub("cut.gz"));
  options.expected_diff_id.reset();
  EXPECT_EQ(UnpackLayer(**cut, t.Sub("l"), "cut", options).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(AccessRecorderTest, RecordsRegularFilesOpenedThroughTheMountInFirstOpenOrder) {
  TempDir t("lpopt");
  for (const char* d : {"lower", "upper", "work", "root"}) ::mkdir(t.Sub(d).c_str(), 0755);
  ASSERT_TRUE(testing::WriteFile(t.Sub("lower/b/two"), "2").ok());
  ASSERT_TRUE(testing::WriteFile(t.Sub("lower/one"), "1").ok());
  auto mount = OverlayMount::Mount({t.Sub("lower")}, t.Sub("upper"), t.Sub("work"), t.Sub("root"));
  ASSERT_TRUE(mount.ok()) << mount.status();
  auto recorder = AccessRecorder::Start(t.Sub("root"));
  ASSERT_TRUE(recorder.ok()) << recorder.status();
  // Opens through the overlay, in this order; a directory and a file read via the lower
  // directory (another filesystem) are not recorded; repeats count once.
  auto r =
      RunShell("cd " + t.Sub("root") + " && cat b/two one b/two > /dev/null && ls b >/dev/null" +
               " && cat " + t.Sub("lower/one") + " > /dev/null && echo x > new && cat new" +
               " >/dev/null && rm new");
  ASSERT_TRUE(r.ok() && r->exit_code == 0);
  ASSERT_TRUE((*recorder)->Drain().ok());
  EXPECT_EQ((*recorder)->paths(), (std::vector<std::string>{"b/two", "one"}));
  EXPECT_EQ((*recorder)->overflows(), 0u);
}

TEST(ChildProcessTest, ExitStatusDeadlineAndMissingProgram) {
  TempDir t("lpopt");
  const std::string log = t.Sub("log");
  EXPECT_TRUE(RunProgram({"true"}, log, std::chrono::seconds(10)).ok());
  absl::Status st =
      RunProgram({"sh", "-c", "echo boom >&2; exit 3"}, log, std::chrono::seconds(10));
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(st.message().find("exit status 3"), std::string::npos) << st;
  EXPECT_NE(st.message().find("boom"), std::string::npos) << st;
  st = RunProgram({"sleep", "60"}, log, std::chrono::milliseconds(200));
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  st = RunProgram({"/no/such/program"}, log, std::chrono::seconds(10));
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_NE(st.message().find("/no/such/program"), std::string::npos) << st;
}

}  // namespace
}  // namespace lazypull::optimize
