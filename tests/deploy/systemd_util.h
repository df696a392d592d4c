// What systemd does with a unit, for tests that run the daemon the way a unit would: a key's
// value in a unit file, and the datagram socket a Type=notify service reports to
// (NOTIFY_SOCKET). Single-threaded use; no state beyond the socket.
#ifndef LAZYPULL_TESTS_DEPLOY_SYSTEMD_UTIL_H_
#define LAZYPULL_TESTS_DEPLOY_SYSTEMD_UTIL_H_

#include <chrono>
#include <string>

namespace lazypull::testing {

// Value of `key=` in `unit` ("" if absent); the last assignment wins, as in systemd.
std::string UnitValue(const std::string& unit, const std::string& key);

// A datagram socket bound at `path` standing in for systemd's notification socket. Owns the
// fd (closed on destruction); the path is replaced if it exists and left in place afterwards.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path);
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  // Whether the socket is bound.
  bool ok() const { return ok_; }
  // The next message, or "" after `timeout`.
  std::string Receive(std::chrono::milliseconds timeout);

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_DEPLOY_SYSTEMD_UTIL_H_
