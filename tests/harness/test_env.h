// Test environment helpers: temporary directories, loopback ports, readiness waits.
// Every resource is RAII-owned by the test that creates it.
#ifndef LAZYPULL_TESTS_HARNESS_TEST_ENV_H_
#define LAZYPULL_TESTS_HARNESS_TEST_ENV_H_

#include <chrono>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lazypull::testing {

// A fresh directory under $TMPDIR (default /tmp), removed recursively on destruction. Any
// mount below it is lazily detached first so a failing test cannot wedge the next one.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "lazypull-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Detaches (MNT_DETACH) every mount at or below `dir`, deepest first.
void UnmountAllUnder(const std::string& dir);

// A TCP port on 127.0.0.1 that was free at the time of the call.
int PickFreePort();

// Polls until a TCP connect to 127.0.0.1:port succeeds.
absl::Status WaitForTcp(int port, std::chrono::milliseconds timeout);

// Polls `condition` (every few milliseconds) until it holds or `timeout` passes; returns its
// last value. For state that settles asynchronously (e.g. a chunk stored after its readers
// were served), never a fixed sleep.
bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Polls until `path` exists and accepts a unix-socket connection.
absl::Status WaitForUnixSocket(const std::string& path, std::chrono::milliseconds timeout);

// Writes `content` to `path` (creating parent dirs), replacing it.
absl::Status WriteFile(const std::string& path, const std::string& content);
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Directory of the built binaries (set by CMake as LAZYPULL_BINARY_DIR) and of the source.
std::string BinaryDir();
std::string SourceDir();

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_TEST_ENV_H_
