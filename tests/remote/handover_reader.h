// HandoverReader: a thread that reads files in a loop with pread(2), comparing every byte with
// the expected content and dropping the files' page cache after each read (posix_fadvise), so
// every pass reaches the FUSE daemon. It counts passes, read errors and wrong bytes and
// records the longest single read (the stall a program sees while the daemon restarts). Used
// by tests/remote/handover_test and bench/handover.
//
// Thread-safe accessors; Stop() joins (a read blocked on a dead mount blocks it: end the
// mount's connection first).
#ifndef LAZYPULL_TESTS_REMOTE_HANDOVER_READER_H_
#define LAZYPULL_TESTS_REMOTE_HANDOVER_READER_H_

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lazypull::testing {

// Loops over files, comparing every byte, dropping their page cache after each read.
class HandoverReader {
 public:
  struct File {
    std::string path;
    std::string expected;
  };
  explicit HandoverReader(std::vector<File> files) : files_(std::move(files)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~HandoverReader() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t passes() const { return passes_.load(); }
  uint64_t errors() const { return errors_.load(); }
  uint64_t wrong() const { return wrong_.load(); }
  double max_stall_seconds() const { return max_stall_ns_.load() / 1e9; }
  // The longest read since the previous call (or the start); starts a new window.
  double TakeMaxStallSeconds() { return max_stall_ns_.exchange(0) / 1e9; }
  std::string first_error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  void Fail(std::atomic<uint64_t>& counter, const std::string& what) {
    counter.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    if (first_error_.empty()) first_error_ = what;
  }
  void Loop() {
    std::vector<char> buf(1 << 20);
    while (!stop_) {
      for (const File& f : files_) {
        int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          Fail(errors_, f.path + ": open: " + strerror(errno));
          continue;
        }
        uint64_t off = 0;
        for (;;) {
          auto t0 = std::chrono::steady_clock::now();
          ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
          int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - t0)
                           .count();
          int64_t prev = max_stall_ns_.load();
          while (ns > prev && !max_stall_ns_.compare_exchange_weak(prev, ns)) {
          }
          if (n < 0) {
            Fail(errors_, f.path + ": read: " + strerror(errno));
            break;
          }
          if (n == 0) break;
          if (off + n > f.expected.size() ||
              std::memcmp(buf.data(), f.expected.data() + off, n) != 0) {
            Fail(wrong_, absl::StrCat(f.path, ": wrong bytes at ", off));
            break;
          }
          off += n;
        }
        if (off != f.expected.size()) Fail(wrong_, absl::StrCat(f.path, ": size ", off));
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // the next pass reaches the daemon
        ::close(fd);
      }
      passes_.fetch_add(1);
    }
  }

  const std::vector<File> files_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> passes_{0}, errors_{0}, wrong_{0};
  std::atomic<int64_t> max_stall_ns_{0};
  mutable std::mutex mu_;
  std::string first_error_;
  std::thread thread_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REMOTE_HANDOVER_READER_H_
