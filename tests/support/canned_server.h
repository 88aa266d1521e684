// A server on 127.0.0.1 that answers every request with canned bytes, for
// clients facing a server that is not virtcap's: HTML, the wrong JSON shape,
// an endless body. One thread; each connection: read the request head (and
// its Content-Length body), write the answer, close. Every wait is bounded;
// the destructor stops it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

namespace virtcap::testing {

struct CannedAnswer {
  std::string head;              // status line and headers, ending with a blank line
  std::string body;              // sent once
  std::size_t repeat_bytes = 0;  // then this many more bytes of 'x' (an endless body)
};

class CannedServer {
 public:
  // `answer` gets the request line ("PUT /v1/hosts/x HTTP/1.1").
  explicit CannedServer(std::function<CannedAnswer(const std::string&)> answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return;
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~CannedServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  CannedServer(const CannedServer&) = delete;
  CannedServer& operator=(const CannedServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_; }

  static CannedAnswer ok(const std::string& content_type, const std::string& body) {
    return {"HTTP/1.1 200 OK\r\nContent-Type: " + content_type +
                "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n",
            body};
  }
  // 200 with a body of `bytes` bytes, streamed.
  static CannedAnswer endless(std::size_t bytes) {
    return {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(bytes) +
                "\r\nConnection: close\r\n\r\n",
            "", bytes};
  }

 private:
  bool wait(int fd, short events, int ms) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, ms) == 1;
  }
  void serve() {
    while (!stop_) {
      if (!wait(fd_, POLLIN, 50)) continue;  // the stop flag is looked at every 50 ms
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      handle(c);
      ::close(c);
    }
  }
  void handle(int c) {
    std::string in;
    char buf[4096];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::size_t need = std::string::npos;
    while (std::chrono::steady_clock::now() < deadline && !stop_) {
      const auto end = in.find("\r\n\r\n");
      if (end != std::string::npos && need == std::string::npos) {
        need = end + 4;
        const auto cl = in.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) need += std::stoul(in.substr(cl + 16));
      }
      if (need != std::string::npos && in.size() >= need) break;
      if (!wait(c, POLLIN, 100)) continue;
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<std::size_t>(n));
    }
    ++requests_;
    const CannedAnswer a = answer_(in.substr(0, in.find("\r\n")));
    if (!send_all(c, a.head + a.body)) return;
    const std::string chunk(1 << 16, 'x');
    for (std::size_t sent = 0; sent < a.repeat_bytes && !stop_;) {
      const std::size_t n = std::min(chunk.size(), a.repeat_bytes - sent);
      if (!send_all(c, chunk.substr(0, n))) return;  // the client stopped reading: done
      sent += n;
    }
  }
  bool send_all(int c, const std::string& s) {
    for (std::size_t off = 0; off < s.size();) {
      if (!wait(c, POLLOUT, 5000)) return false;
      const ssize_t n = ::send(c, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  std::function<CannedAnswer(const std::string&)> answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace virtcap::testing
