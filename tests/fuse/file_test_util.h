// Helpers of the layer mount tests (tests/fuse): deterministic file contents, writing a source
// tree, reading a mounted file strictly (any read error, EIO included, is an error), and
// counting the requests a mount serves.
#ifndef LAZYPULL_TESTS_FUSE_FILE_TEST_UTIL_H_
#define LAZYPULL_TESTS_FUSE_FILE_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "mount/op_observer.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {

// `n` pseudo-random bytes, the same for the same seed.
inline std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// Writes `content` to `path` with `mode`; a failure fails the test.
inline void MustWrite(const std::string& path, const std::string& content, mode_t mode = 0644) {
  ASSERT_TRUE(WriteFile(path, content).ok()) << path;
  ASSERT_EQ(chmod(path.c_str(), mode), 0) << path;
}

// Reads a whole file; any read error (EIO included) is an error.
inline absl::StatusOr<std::string> ReadAll(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(path + ": " + strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      int err = errno;
      close(fd);
      return absl::InternalError(path + ": " + strerror(err));
    }
    if (n == 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

// Counts the requests a mount serves, per op name. Thread-safe.
class OpCounter : public mount::FsOpObserver {
 public:
  void OnOp(std::string_view, std::string_view op, std::chrono::nanoseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[std::string(op)];
  }
  // The counts since the last Take, and starts again from zero.
  std::map<std::string, int> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(counts_, {});
  }
  std::map<std::string, int> Peek() {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, int> counts_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_FUSE_FILE_TEST_UTIL_H_
