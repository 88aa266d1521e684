// Raw bytes to an HTTP server over a loopback socket, for requests no
// well-behaved client would send (newlines and invalid UTF-8 in paths, chunk
// framing, hostile headers). Every read and write has a deadline.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace virtcap::testing {

struct RawAnswer {
  bool connected = false;
  bool timed_out = false;  // no answer and no close before the deadline
  std::string text;        // everything the server sent until it closed
  // The status of the first response, 0 if none.
  int status() const {
    if (text.size() < 12 || text.compare(0, 7, "HTTP/1.") != 0) return 0;
    return std::atoi(text.substr(9, 3).c_str());
  }
  // The body of the last response in `text` (after the last blank line).
  std::string body() const {
    const auto at = text.rfind("\r\n\r\n");
    return at == std::string::npos ? std::string() : text.substr(at + 4);
  }
};

class RawConnection {
 public:
  // `source` (host byte order, 0: the next in turn, see below): the loopback
  // address the connection comes from.
  explicit RawConnection(int port, std::uint32_t source = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // Each connection comes from its own loopback source address
    // (127.0.0.2 .. 127.255.255.254, in turn), so a fuzzer opening tens of
    // thousands of connections never reuses a 4-tuple still in TIME_WAIT on
    // either side nor runs out of ephemeral ports: a refused connect is then
    // the server's doing, not the test's.
    static std::atomic<std::uint32_t> next_source{0};
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(source ? source : 0x7F000000u | (next_source++ % 0xFFFFFDu + 2u));
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0 && connect_to(a);
    if (!ok_ && error_.empty()) error_ = std::strerror(errno);
  }
  // Why the connection failed ("" when ok()).
  const std::string& error() const { return error_; }
  ~RawConnection() {
    if (fd_ >= 0) {
      // Close with a reset, not a FIN: the answer has been read, and a
      // fuzzer opening thousands of connections a second would otherwise
      // fill the ephemeral port range with TIME_WAIT sockets (then connect
      // fails with EADDRNOTAVAIL, which is not the server's fault).
      const linger l{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      ::close(fd_);
    }
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  bool ok() const { return ok_; }

  // Writes all of `data` before the deadline; false if the server closed or
  // stopped reading.
  bool send(const std::string& data, std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    std::size_t done = 0;
    while (ok_ && done < data.size()) {
      if (wait_for(POLLOUT, end) <= 0) return false;
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return ok_;
  }
  // Half-closes our side, then reads until the server closes or the deadline.
  RawAnswer finish(std::chrono::milliseconds deadline = std::chrono::seconds(30), bool half_close = true) {
    RawAnswer a;
    a.connected = ok_;
    if (!ok_) return a;
    if (half_close) ::shutdown(fd_, SHUT_WR);
    const auto end = std::chrono::steady_clock::now() + deadline;
    char buf[65536];
    while (true) {
      const int rc = wait_for(POLLIN, end);
      if (rc == 0) {
        a.timed_out = true;
        break;
      }
      if (rc < 0) break;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      a.text.append(buf, static_cast<std::size_t>(n));
    }
    return a;
  }

 private:
  // connect(2) that a signal cannot break. A process with a signal handler
  // installed without SA_RESTART (libFuzzer's SIGALRM timer, the replay's
  // alarm) sees connect fail with EINTR while the handshake goes on in the
  // kernel; POSIX says the connection then completes asynchronously. Calling
  // connect again reports where it got to: EALREADY (still going: wait until
  // writable, then ask again), EISCONN (done) or the real error.
  bool connect_to(const sockaddr_in& to) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
      if (errno == EISCONN) return true;
      if (errno == EINTR) continue;
      if (errno != EALREADY && errno != EINPROGRESS) return false;
      const int rc = wait_for(POLLOUT, end);
      if (rc == 0) {
        error_ = "connect did not complete within 30 s";
        return false;
      }
      if (rc < 0) return false;
    }
    return true;
  }
  // poll(2) on our socket until `events`, the deadline (0) or an error (-1),
  // carrying on through signals.
  int wait_for(short events, std::chrono::steady_clock::time_point end) const {
    while (true) {
      pollfd p{fd_, events, 0};
      const int rc = ::poll(&p, 1, remaining(end));
      if (rc >= 0 || errno != EINTR) return rc;
    }
  }
  static int remaining(std::chrono::steady_clock::time_point end) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    return ms < 0 ? 0 : static_cast<int>(ms);
  }
  int fd_ = -1;
  bool ok_ = false;
  std::string error_;
};

// One request, "Connection: close" style: send, half-close, read to the end.
inline RawAnswer raw_exchange(int port, const std::string& bytes,
                              std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
  RawConnection c(port);
  if (!c.send(bytes, deadline)) {
    auto a = c.finish(deadline);
    return a;
  }
  return c.finish(deadline);
}

// "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra headers + body framing.
inline std::string request_text(const std::string& method, const std::string& target,
                                const std::string& headers = "", const std::string& body = "",
                                const std::string& host = "127.0.0.1") {
  std::string r =
      method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n" + headers;
  if (!body.empty()) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

}  // namespace virtcap::testing
