// A small real TCP forwarder on 127.0.0.1 for fault tests: every connection
// accepted is forwarded, byte for byte, to a Unix socket (e.g. a PostgreSQL
// server's). kill() closes the listening socket and every forwarded
// connection at once, as a network cut does to the connections that cross
// it; a new proxy on the same port stands for the network coming back.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace virtcap::testing {

class TcpProxy {
 public:
  // Listens on 127.0.0.1:port (0: any free port); nullptr and `error` set
  // when it cannot.
  static std::unique_ptr<TcpProxy> start(const std::string& unix_target, int port, std::string* error) {
    std::unique_ptr<TcpProxy> p(new TcpProxy(unix_target));
    p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(p->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    socklen_t len = sizeof a;
    if (p->listen_fd_ < 0 || ::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(p->listen_fd_, 64) != 0 ||
        ::getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      *error = "proxy on 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno);
      return nullptr;
    }
    p->port_ = ntohs(a.sin_port);
    p->wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
    p->thread_ = std::thread([raw = p.get()] { raw->loop(); });
    return p;
  }
  ~TcpProxy() { kill(); }
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  std::size_t connections_accepted() const { return accepted_; }

  // Closes the listener and every forwarded connection; idempotent.
  void kill() {
    if (!thread_.joinable()) return;
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
    for (auto& [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    pairs_.clear();
    ::close(listen_fd_);
    ::close(wake_fd_);
  }

 private:
  explicit TcpProxy(std::string target) : target_(std::move(target)) {}

  int connect_target() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un u{};
    u.sun_family = AF_UNIX;
    std::strncpy(u.sun_path, target_.c_str(), sizeof u.sun_path - 1);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&u), sizeof u) == 0) return fd;
    if (fd >= 0) ::close(fd);
    return -1;
  }

  // Copies what `from` has to `to`; false when either side is done.
  static bool pump(int from, int to) {
    char buf[65536];
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return n < 0 && errno == EINTR;
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(to, buf + off, static_cast<std::size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      off += w;
    }
    return true;
  }

  void loop() {
    for (;;) {
      std::vector<pollfd> fds = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (const auto& [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
      if (fds[0].revents != 0) return;
      const std::size_t polled = pairs_.size();  // fds has entries for these only
      if (fds[1].revents & POLLIN) {
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client >= 0) {
          ++accepted_;
          const int server = connect_target();
          if (server < 0)
            ::close(client);  // the server is away: the client sees the connection closed
          else
            pairs_.emplace_back(client, server);
        }
      }
      std::vector<std::pair<int, int>> keep;
      for (std::size_t i = polled; i < pairs_.size(); ++i) keep.push_back(pairs_[i]);  // just accepted
      for (std::size_t i = 0; i < polled; ++i) {
        const auto [a, b] = pairs_[i];
        const short ra = fds[2 + 2 * i].revents, rb = fds[3 + 2 * i].revents;
        bool alive = true;
        if (ra != 0) alive = pump(a, b);
        if (alive && rb != 0) alive = pump(b, a);
        if (alive) {
          keep.emplace_back(a, b);
        } else {
          ::close(a);
          ::close(b);
        }
      }
      pairs_ = std::move(keep);
    }
  }

  std::string target_;
  int listen_fd_ = -1, wake_fd_ = -1, port_ = 0;
  std::atomic<std::size_t> accepted_{0};
  std::vector<std::pair<int, int>> pairs_;
  std::thread thread_;
};

}  // namespace virtcap::testing
