// UniqueFd: sole owner of a POSIX file descriptor; closes it on destruction.
//
// Not thread-safe (like any value type); move-only.
#ifndef LAZYPULL_BASE_UNIQUE_FD_H_
#define LAZYPULL_BASE_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace lazypull {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (may be -1).
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }
  // Closes the current fd (if any) and owns `fd` instead.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace lazypull

#endif  // LAZYPULL_BASE_UNIQUE_FD_H_
