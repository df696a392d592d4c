// cache_crash_helper DIR STAGE READY_FILE: stores one 4 MiB chunk (PatternBytes(4 MiB, 7))
// into the chunk cache at DIR and, at STAGE ("write": half of the bytes written; "rename":
// fully written, not yet renamed), creates READY_FILE and blocks until killed.
// The cache tests SIGKILL it there to show a crash never leaves a partial chunk visible.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "fetcher/cache/chunk_cache.h"
#include "tests/cache/fault_cache_fs.h"

namespace {

[[noreturn]] void SignalReadyAndBlock(const std::string& ready_file) {
  int fd = ::open(ready_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR write|rename READY_FILE\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1], stage = argv[2], ready = argv[3];
  auto fs = std::make_shared<lazypull::testing::FaultCacheFs>();
  if (stage == "write") {
    fs->on_half_written = [ready] { SignalReadyAndBlock(ready); };
  } else if (stage == "rename") {
    fs->before_rename = [ready] { SignalReadyAndBlock(ready); };
  } else {
    std::fprintf(stderr, "unknown stage %s\n", stage.c_str());
    return 2;
  }
  lazypull::CacheConfig config;
  config.dir = dir;
  auto cache = lazypull::ChunkCache::Open(config, fs);
  if (!cache.ok()) {
    std::fprintf(stderr, "open: %s\n", cache.status().ToString().c_str());
    return 1;
  }
  std::string data = lazypull::testing::PatternBytes(4 << 20, 7);
  absl::Status s = (*cache)->Put(lazypull::Digest::Of(data), data);
  std::fprintf(stderr, "put returned (should have blocked): %s\n", s.ToString().c_str());
  return 1;
}
