// Helpers shared by the layer benchmarks (bench/erofs, bench/fuse): fatal errors, shell steps,
// JSON result lines, an eStargz blob of a directory, dropping the page cache, and a read-only
// overlay as a container's rootfs. Benchmarks are root-only tools that stop at the first
// failure, so every helper exits the process (with the program's name) instead of returning
// an error.
#ifndef LAZYPULL_BENCH_COMMON_BENCH_SUPPORT_H_
#define LAZYPULL_BENCH_COMMON_BENCH_SUPPORT_H_

#include <errno.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"
#include "nlohmann/json.hpp"

namespace lazypull::bench {

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, what.c_str());
  std::exit(1);
}

inline void Sh(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) Die("command failed: " + cmd);
}

// One result as a JSON line on stdout.
inline void Print(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// The directory `src` as an eStargz blob at `out` (pax tar sorted by name, default options).
inline convert::EstargzResult BuildEstargz(const std::string& src, const std::string& out) {
  const std::string tar_path = out + ".tar";
  Sh("tar --format=pax --sort=name -C " + src + " -cf " + tar_path + " .");
  auto tar = NewFileBlobReader(tar_path);
  if (!tar.ok()) Die(tar.status().ToString());
  auto tar_index = tar::ScanTar(**tar);
  if (!tar_index.ok()) Die(tar_index.status().ToString());
  auto sink = convert::NewFileBlobSink(out);
  if (!sink.ok()) Die(sink.status().ToString());
  auto written = convert::WriteEstargz(**tar, *tar_index, {}, **sink);
  if (!written.ok()) Die(written.status().ToString());
  std::filesystem::remove(tar_path);
  return *written;
}

inline void DropCaches() {
  sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3" << std::flush;
  if (!f) Die("cannot write /proc/sys/vm/drop_caches (run as root)");
}

// A read-only overlayfs of `lower` over an empty dir, as a container's rootfs; RAII.
class Overlay {
 public:
  Overlay(const std::string& lower, const std::string& work) : target_(work + "/ovl") {
    std::filesystem::create_directories(work + "/empty");
    std::filesystem::create_directories(target_);
    std::string opts = "lowerdir=" + lower + ":" + work + "/empty";
    if (::mount("overlay", target_.c_str(), "overlay", MS_RDONLY, opts.c_str()) != 0) {
      Die("mount overlay " + opts + ": " + std::strerror(errno));
    }
  }
  ~Overlay() { umount2(target_.c_str(), MNT_DETACH); }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;
  const std::string& path() const { return target_; }

 private:
  std::string target_;
};

}  // namespace lazypull::bench

#endif  // LAZYPULL_BENCH_COMMON_BENCH_SUPPORT_H_
