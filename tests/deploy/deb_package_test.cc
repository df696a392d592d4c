// The Debian package (issue 22): scripts/build-deb.sh packages this build's daemon and CLI as
// lazypull_<version>_amd64.deb, and
//   - the package holds exactly the expected files, the config as its only conffile, and a
//     Depends that names exactly the Debian packages owning the libraries the binaries link;
//     lintian (Debian's) reports no error;
//   - on a bare Debian 12 (debootstrap minbase, in a chroot: no systemd runs there, as in any
//     chroot or container) `apt-get install ./lazypull_*.deb` pulls the declared dependencies
//     from the Debian mirror and enables the unit; the daemon started with exactly the unit's
//     ExecStart and a NOTIFY_SOCKET, as systemd starts the Type=notify service, sends READY=1,
//     `lazypull health` inside the chroot agrees, and a containerd on this machine using the
//     chroot's socket as its proxy snapshotter creates, lists and removes a snapshot; SIGTERM
//     stops it cleanly; `apt-get purge --autoremove lazypull` then leaves the tree exactly as
//     before the install (apt's own logs, caches and database aside).
// The test process enters private mount and network namespaces, so the chroot's mounts and the
// daemon's metrics port never reach the machine.
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/deploy/systemd_util.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

constexpr char kUnit[] = "lazypull-snapshotter.service";

std::set<std::string> Lines(const std::string& text) {
  std::set<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out.insert(std::string(line));
  }
  return out;
}

// Package names of a Depends field, versions and alternatives' order dropped.
std::set<std::string> DependsNames(const std::string& depends) {
  std::set<std::string> out;
  for (absl::string_view item : absl::StrSplit(depends, absl::ByAnyChar(",|"), absl::SkipEmpty())) {
    item = absl::StripAsciiWhitespace(item);
    out.insert(std::string(item.substr(0, item.find(' '))));
  }
  return out;
}

absl::Status Mount(const std::string& source, const std::string& target, const char* type,
                   unsigned long flags, const char* data = nullptr) {
  if (::mount(source.c_str(), target.c_str(), type, flags, data) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mount ", source, " on ", target));
  }
  return absl::OkStatus();
}

class DebPackageTest : public ::testing::Test {
 protected:
  // One package for both tests.
  static void SetUpTestSuite() {
    out_ = new TempDir("lpdeb");
    auto r = RunCommand({"bash", SourceDir() + "/scripts/build-deb.sh", "--build-dir", BinaryDir(),
                         "--no-build", "--output", out_->path()},
                        std::chrono::seconds(600));
    if (!r.ok() || r->exit_code != 0) {
      build_error_ = new std::string(r.ok() ? r->output : r.status().ToString());
      return;
    }
    std::vector<std::string> lines = absl::StrSplit(r->output, '\n', absl::SkipEmpty());
    deb_ = new std::string(lines.back());
  }
  static void TearDownTestSuite() {
    delete out_;
    delete deb_;
    delete build_error_;
    out_ = nullptr;
    deb_ = nullptr;
    build_error_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(deb_, nullptr) << "build-deb.sh failed:\n" << *build_error_; }

  static std::string Field(const std::string& name) {
    auto r = RunCommand({"dpkg-deb", "-f", *deb_, name});
    return r.ok() && r->exit_code == 0 ? std::string(absl::StripAsciiWhitespace(r->output)) : "";
  }

  static inline TempDir* out_ = nullptr;
  static inline std::string* deb_ = nullptr;
  static inline std::string* build_error_ = nullptr;
};

TEST_F(DebPackageTest, HoldsTheLayoutDeclaresItsLibrariesAndIsLintianClean) {
  EXPECT_EQ(std::filesystem::path(*deb_).filename(),
            absl::StrCat("lazypull_", LAZYPULL_VERSION, "_amd64.deb"));
  EXPECT_EQ(Field("Package"), "lazypull");
  EXPECT_EQ(Field("Version"), LAZYPULL_VERSION);
  EXPECT_EQ(Field("Architecture"), "amd64");

  auto contents = RunShell("dpkg-deb -c '" + *deb_ + "' | awk '{print $1, $2, $6}'");
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(contents->output,
            "drwxr-xr-x root/root ./\n"
            "drwxr-xr-x root/root ./etc/\n"
            "drwxr-xr-x root/root ./etc/lazypull/\n"
            "-rw-r--r-- root/root ./etc/lazypull/config.toml\n"
            "drwxr-xr-x root/root ./lib/\n"
            "drwxr-xr-x root/root ./lib/systemd/\n"
            "drwxr-xr-x root/root ./lib/systemd/system/\n"
            "-rw-r--r-- root/root ./lib/systemd/system/lazypull-fuse-holder.service\n"
            "-rw-r--r-- root/root ./lib/systemd/system/lazypull-snapshotter.service\n"
            "drwxr-xr-x root/root ./usr/\n"
            "drwxr-xr-x root/root ./usr/bin/\n"
            "-rwxr-xr-x root/root ./usr/bin/lazypull\n"
            "-rwxr-xr-x root/root ./usr/bin/lazypull-fuse-holder\n"
            "-rwxr-xr-x root/root ./usr/bin/lazypull-snapshotter\n"
            "drwxr-xr-x root/root ./usr/share/\n"
            "drwxr-xr-x root/root ./usr/share/doc/\n"
            "drwxr-xr-x root/root ./usr/share/doc/lazypull/\n"
            "-rw-r--r-- root/root ./usr/share/doc/lazypull/README.md\n"
            "-rw-r--r-- root/root ./usr/share/doc/lazypull/changelog.gz\n"
            "-rw-r--r-- root/root ./usr/share/doc/lazypull/copyright\n"
            "drwxr-xr-x root/root ./usr/share/man/\n"
            "drwxr-xr-x root/root ./usr/share/man/man1/\n"
            "-rw-r--r-- root/root ./usr/share/man/man1/lazypull.1.gz\n"
            "drwxr-xr-x root/root ./usr/share/man/man8/\n"
            "-rw-r--r-- root/root ./usr/share/man/man8/lazypull-snapshotter.8.gz\n");

  const std::string control = out_->Sub("control");
  auto r = RunCommand({"dpkg-deb", "-e", *deb_, control});
  ASSERT_TRUE(r.ok() && r->exit_code == 0);
  EXPECT_EQ(*ReadFile(control + "/conffiles"), "/etc/lazypull/config.toml\n");
  for (const char* script : {"postinst", "prerm", "postrm"}) {
    EXPECT_EQ(::access((control + "/" + script).c_str(), X_OK), 0) << script;
  }
  // The shipped config and the unit's ExecStart naming it and the packaged binary.
  const std::string files = out_->Sub("files");
  r = RunCommand({"dpkg-deb", "-x", *deb_, files});
  ASSERT_TRUE(r.ok() && r->exit_code == 0);
  EXPECT_EQ(*ReadFile(files + "/etc/lazypull/config.toml"),
            *ReadFile(SourceDir() + "/packaging/config.toml"));
  auto unit = ReadFile(files + "/lib/systemd/system/" + kUnit);
  ASSERT_TRUE(unit.ok());
  EXPECT_EQ(UnitValue(*unit, "ExecStart"),
            "/usr/bin/lazypull-snapshotter --config /etc/lazypull/config.toml");
  EXPECT_EQ(UnitValue(*unit, "Type"), "notify");
  auto holder_unit = ReadFile(files + "/lib/systemd/system/lazypull-fuse-holder.service");
  ASSERT_TRUE(holder_unit.ok());
  EXPECT_EQ(UnitValue(*holder_unit, "ExecStart"),
            "/usr/bin/lazypull-fuse-holder --socket /var/lib/lazypull/fuse-holder.sock");

  // Depends names exactly the packages owning the shared libraries the binaries link.
  auto owners = RunShell("cd '" + files +
                         "/usr/bin' && for so in $(readelf -d lazypull-snapshotter lazypull "
                         "lazypull-fuse-holder | "
                         "sed -n 's/.*Shared library: \\[\\(.*\\)\\]/\\1/p' | sort -u); do "
                         "dpkg -S \"/usr/lib/x86_64-linux-gnu/$so\" 2>/dev/null || dpkg -S "
                         "\"/lib/x86_64-linux-gnu/$so\"; "
                         "done | cut -d: -f1 | sort -u");
  ASSERT_TRUE(owners.ok());
  ASSERT_EQ(owners->exit_code, 0) << owners->output;
  const std::set<std::string> owner_set = Lines(owners->output);
  EXPECT_GE(owner_set.size(), 10u) << owners->output;
  EXPECT_EQ(DependsNames(Field("Depends")), owner_set) << Field("Depends");
  EXPECT_TRUE(owner_set.count("libgrpc++1.51") && owner_set.count("libfuse3-3")) << owners->output;

  // lintian: no error (warnings and notes are printed for the record).
  auto lint = RunCommand({"lintian", "--fail-on", "error", "--tag-display-limit", "0", *deb_},
                         std::chrono::seconds(300));
  ASSERT_TRUE(lint.ok()) << lint.status();
  std::cerr << "lintian:\n" << lint->output;
  EXPECT_EQ(lint->exit_code, 0) << lint->output;
  for (const std::string& line : Lines(lint->output)) {
    EXPECT_FALSE(absl::StartsWith(line, "E: ")) << line;
  }
}

// Paths under `root` (one file system: the chroot's mounts are not listed), relative, except
// what apt and dpkg keep for themselves and the scratch directories.
std::set<std::string> TreeListing(const std::string& root) {
  auto r = RunShell("cd '" + root +
                    "' && find . -xdev "
                    "\\( -path ./var/log -o -path ./var/cache -o -path ./var/lib/apt "
                    "-o -path ./var/lib/dpkg -o -path ./tmp -o -path ./run \\) -prune -o -print");
  return r.ok() && r->exit_code == 0 ? Lines(r->output) : std::set<std::string>{"<find failed>"};
}

std::string Diff(const std::set<std::string>& before, const std::set<std::string>& after) {
  std::string out;
  for (const std::string& p : after) {
    if (!before.count(p)) absl::StrAppend(&out, "+ ", p, "\n");
  }
  for (const std::string& p : before) {
    if (!after.count(p)) absl::StrAppend(&out, "- ", p, "\n");
  }
  return out;
}

TEST_F(DebPackageTest, InstallsOnBareDebianServesAndPurges) {
  // Private mounts: the chroot's /proc, /run and apt cache vanish with this process.
  ASSERT_EQ(::unshare(CLONE_NEWNS), 0);
  ASSERT_TRUE(Mount("none", "/", nullptr, MS_REC | MS_PRIVATE).ok());
  TempDir dir("lpdebroot");
  const std::string root = dir.Sub("root");
  const std::string cache = BinaryDir() + "/deb-test-cache";
  auto r = RunCommand({"bash", SourceDir() + "/tests/deploy/debian_chroot.sh", root, cache},
                      std::chrono::seconds(900));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->output;
  ASSERT_TRUE(Mount("proc", root + "/proc", "proc", 0).ok());
  ASSERT_TRUE(Mount("tmpfs", root + "/run", "tmpfs", 0, "mode=0755").ok());
  ASSERT_TRUE(Mount(cache + "/archives", root + "/var/cache/apt/archives", nullptr, MS_BIND).ok());
  const std::set<std::string> before = TreeListing(root);
  ASSERT_FALSE(before.empty());
  std::filesystem::copy_file(*deb_,
                             root + "/tmp/" + std::filesystem::path(*deb_).filename().string());
  const std::string deb_in_root = "/tmp/" + std::filesystem::path(*deb_).filename().string();

  const std::map<std::string, std::string> apt_env = {{"DEBIAN_FRONTEND", "noninteractive"}};
  auto apt = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"chroot", root, "apt-get", "-y", "-q"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, std::chrono::seconds(600), apt_env);
  };
  r = apt({"install", "--no-install-recommends", deb_in_root});
  ASSERT_TRUE(r.ok()) << r.status();
  if (r->exit_code != 0) {  // The cached package lists may name versions the mirror dropped.
    auto update = apt({"update"});
    ASSERT_TRUE(update.ok() && update->exit_code == 0) << (update.ok() ? update->output : "");
    r = apt({"install", "--no-install-recommends", deb_in_root});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  ASSERT_EQ(r->exit_code, 0) << r->output;
  r = RunCommand({"chroot", root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "lazypull"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, absl::StrCat("install ok installed ", LAZYPULL_VERSION));
  // Enabled as dh_installsystemd does (no systemd runs in the chroot, so nothing started yet).
  std::error_code ec;
  EXPECT_EQ(std::filesystem::read_symlink(
                root + "/etc/systemd/system/multi-user.target.wants/" + kUnit, ec),
            std::string("/lib/systemd/system/") + kUnit);
  EXPECT_EQ(
      std::filesystem::read_symlink(
          root + "/etc/systemd/system/multi-user.target.wants/lazypull-fuse-holder.service", ec),
      std::string("/lib/systemd/system/lazypull-fuse-holder.service"));
  EXPECT_FALSE(std::filesystem::exists(root + "/run/lazypull"));

  // The daemon as systemd runs the unit: its ExecStart, NOTIFY_SOCKET, in its own network
  // namespace (its metrics port is the default 127.0.0.1:9102).
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
  r = RunCommand({"ip", "link", "set", "lo", "up"});
  ASSERT_TRUE(r.ok() && r->exit_code == 0);
  auto unit = ReadFile(root + "/lib/systemd/system/" + kUnit);
  ASSERT_TRUE(unit.ok());
  std::vector<std::string> argv = {"chroot", root};
  for (absl::string_view word : absl::StrSplit(UnitValue(*unit, "ExecStart"), ' ')) {
    argv.emplace_back(word);
  }
  NotifySocket notify(root + "/run/notify.sock");
  ASSERT_TRUE(notify.ok());
  auto proc =
      Subprocess::Start(argv, dir.Sub("daemon.log"), {{"NOTIFY_SOCKET", "/run/notify.sock"}});
  ASSERT_TRUE(proc.ok()) << proc.status();
  const std::string ready = notify.Receive(std::chrono::seconds(60));
  ASSERT_TRUE(absl::StartsWith(ready, "READY=1\n")) << ready << "\n" << proc->ReadLog();
  EXPECT_TRUE(absl::StrContains(ready, "STATUS=serving on /run/lazypull/lazypull.sock")) << ready;
  r = RunCommand({"chroot", root, "lazypull", "health"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->output;
  EXPECT_TRUE(absl::StartsWith(r->output, "ok: /run/lazypull/lazypull.sock answered")) << r->output;
  {
    // containerd's view: the socket serves the Snapshots API as a proxy snapshotter.
    TempDir ctrd_dir("lpdebctrd");
    ContainerdOptions options;
    options.proxy_snapshotter_socket = root + "/run/lazypull/lazypull.sock";
    auto containerd = ContainerdProcess::Start(ctrd_dir.path(), options);
    ASSERT_TRUE(containerd.ok()) << containerd.status();
    auto out =
        (*containerd)->CtrOk({"snapshots", "--snapshotter", "lazypull", "prepare", "deb-k1"});
    ASSERT_TRUE(out.ok()) << out.status();
    out = (*containerd)->CtrOk({"snapshots", "--snapshotter", "lazypull", "ls"});
    ASSERT_TRUE(out.ok()) << out.status();
    std::vector<std::string> rows = absl::StrSplit(*out, '\n', absl::SkipEmpty());
    ASSERT_EQ(rows.size(), 2u) << *out;
    EXPECT_EQ(std::vector<std::string>(absl::StrSplit(rows[1], ' ', absl::SkipWhitespace())),
              (std::vector<std::string>{"deb-k1", "Active"}))
        << *out;
    out = (*containerd)->CtrOk({"snapshots", "--snapshotter", "lazypull", "rm", "deb-k1"});
    ASSERT_TRUE(out.ok()) << out.status();
  }
  proc->Signal(SIGTERM);
  EXPECT_EQ(notify.Receive(std::chrono::seconds(30)), "STOPPING=1");
  auto status = proc->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status << proc->ReadLog();
  EXPECT_TRUE(std::filesystem::exists(root + "/var/lib/lazypull/metadata.db"));
  ::unlink((root + "/run/notify.sock").c_str());

  // Purge, with the dependencies it pulled in: the tree is as before the install.
  r = apt({"purge", "--autoremove", "lazypull"});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->output;
  r = RunCommand({"chroot", root, "dpkg-query", "-W", "-f", "${Status}", "lazypull"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->exit_code != 0 || r->output == "unknown ok not-installed") << r->output;
  EXPECT_EQ(Diff(before, TreeListing(root)), "");
  EXPECT_FALSE(std::filesystem::exists(root + "/run/lazypull"));
}

}  // namespace
}  // namespace lazypull::testing
