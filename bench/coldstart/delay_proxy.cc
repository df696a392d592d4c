// delay_proxy: a TCP proxy that adds a fixed one-way latency in both directions, for the
// cold-start benchmark's emulated WAN link (this kernel has no netem qdisc; bandwidth is
// shaped with tbf on the veth, latency here).
//
//   delay_proxy --listen 10.231.0.2:5000 --upstream 127.0.0.1:5001 --delay-ms 10
//
// Every chunk of bytes read from one side is written to the other side `delay` after it
// arrived, in order. Each connection gets its own upstream connection and two forwarding
// threads per direction (a reader stamping chunks, a writer releasing them), so a slow reader
// on one connection never delays another. Runs until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Chunk {
  Clock::time_point due;
  std::string bytes;  // empty = end of stream
};

// One direction of one connection: bytes read from `from` are written to `to` after `delay`.
class Pipe {
 public:
  Pipe(int from, int to, std::chrono::microseconds delay) : from_(from), to_(to), delay_(delay) {}

  void Run() {
    std::thread writer([this] { WriteLoop(); });
    std::vector<char> buf(256 << 10);
    for (;;) {
      ssize_t n = ::read(from_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      Chunk c{Clock::now() + delay_, n > 0 ? std::string(buf.data(), n) : std::string()};
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(c));
      }
      cv_.notify_one();
      if (n <= 0) break;
    }
    writer.join();
  }

 private:
  void WriteLoop() {
    for (;;) {
      Chunk c;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        c = std::move(queue_.front());
        queue_.pop_front();
      }
      std::this_thread::sleep_until(c.due);
      if (c.bytes.empty()) {
        ::shutdown(to_, SHUT_WR);
        return;
      }
      size_t done = 0;
      while (done < c.bytes.size()) {
        // MSG_NOSIGNAL: a peer that hung up must not kill the proxy (and every other connection).
        ssize_t n = ::send(to_, c.bytes.data() + done, c.bytes.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ::shutdown(from_, SHUT_RD);  // the other side is gone: stop reading too
          return;
        }
        done += static_cast<size_t>(n);
      }
    }
  }

  const int from_;
  const int to_;
  const std::chrono::microseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
};

bool ParseHostPort(const std::string& text, sockaddr_in* addr) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::memset(addr, 0, sizeof(*addr));
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(std::stoi(text.substr(colon + 1))));
  return ::inet_pton(AF_INET, text.substr(0, colon).c_str(), &addr->sin_addr) == 1;
}

void Serve(int client, sockaddr_in upstream, std::chrono::microseconds delay) {
  int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (up < 0 || ::connect(up, reinterpret_cast<sockaddr*>(&upstream), sizeof(upstream)) != 0) {
    std::perror("delay_proxy: connect upstream");
    ::close(client);
    if (up >= 0) ::close(up);
    return;
  }
  int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Pipe to_upstream(client, up, delay);
  Pipe to_client(up, client, delay);
  std::thread t([&] { to_upstream.Run(); });
  to_client.Run();
  t.join();
  ::close(up);
  ::close(client);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"TCP proxy adding a fixed latency in both directions"};
  std::string listen_at, upstream_at;
  int delay_ms = 10;
  app.add_option("--listen", listen_at, "address:port to listen on")->required();
  app.add_option("--upstream", upstream_at, "address:port to forward to")->required();
  app.add_option("--delay-ms", delay_ms, "one-way delay in milliseconds")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  sockaddr_in listen_addr, upstream_addr;
  if (!ParseHostPort(listen_at, &listen_addr) || !ParseHostPort(upstream_at, &upstream_addr)) {
    std::fprintf(stderr, "delay_proxy: addresses must be IPv4 a.b.c.d:port\n");
    return 2;
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&listen_addr), sizeof(listen_addr)) != 0 ||
      ::listen(fd, 256) != 0) {
    std::perror("delay_proxy: listen");
    return 1;
  }
  std::fprintf(stderr, "delay_proxy: %s -> %s, %d ms each way\n", listen_at.c_str(),
               upstream_at.c_str(), delay_ms);
  const auto delay = std::chrono::microseconds(delay_ms * 1000);
  for (;;) {
    int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR) continue;
      std::perror("delay_proxy: accept");
      return 1;
    }
    std::thread(Serve, client, upstream_addr, delay).detach();
  }
}
