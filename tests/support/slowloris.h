// A slowloris attack and a well-behaved client to measure beside it, for the
// issue-19 tests (no client can starve a server). Loopback only: every
// connection comes from a chosen 127.x.y.z source address.
//  - Slowloris: N connections spread over source addresses, each sending one
//    byte of an endless request (plain: header lines; TLS: a ClientHello
//    record that never ends) every 1-2 s, and opening a new one 0.5-1.5 s
//    after the server closes one, as slowloris tools do. It records how long
//    each connection lived, by its own clock.
//  - probe(): one request on a new connection (TLS: GnuTLS, verifying the
//    chain against a CA file), with a deadline; its latency by the client's
//    clock, from connect() to the last byte of the answer.
#pragma once

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace virtcap::testing {

using SteadyClock = std::chrono::steady_clock;

// 127.a.b.c in host byte order.
constexpr std::uint32_t loopback(unsigned a, unsigned b, unsigned c) {
  return 0x7F000000u | a << 16 | b << 8 | c;
}

// The soft open-file limit raised to the hard one (thousands of sockets).
inline rlim_t raise_open_file_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

// A non-blocking TCP socket from `source` to 127.0.0.1:port, connect()
// issued (it may still be in progress); -1 on failure.
inline int connect_from(std::uint32_t source, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int yes = 1;
  ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &yes, sizeof yes);
  // Closed with a reset: thousands of connections a second leave no TIME_WAIT.
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  sockaddr_in src{}, to{};
  src.sin_family = to.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(source);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class Slowloris {
 public:
  struct Options {
    int port = 0;
    bool tls = false;
    std::vector<std::uint32_t> sources;  // connection i comes from sources[i % size]
    int connections = 0;
  };
  struct Figures {
    int opened = 0;  // connections opened in all (reconnections included)
    int closed_by_server = 0;
    int peak_open = 0;  // most connections open at once (connected, not yet closed)
    // The longest any connection stayed open (connected until the server
    // closed it, or until the attack stopped), in seconds.
    double longest_held_s = 0;
  };

  explicit Slowloris(Options o) : o_(std::move(o)), conns_(static_cast<std::size_t>(o_.connections)) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    thread_ = std::thread([this] { run(); });
  }
  ~Slowloris() { stop(); }
  Slowloris(const Slowloris&) = delete;
  Slowloris& operator=(const Slowloris&) = delete;

  // Until `n` connections are open at once, at most `limit`; false at the limit.
  bool wait_open(int n, std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return figures_.peak_open >= n; });
  }
  // Stops the attack (closing every connection) and returns its figures.
  Figures stop() {
    if (thread_.joinable()) {
      stop_ = true;
      thread_.join();
      ::close(epoll_);
    }
    std::lock_guard lock(mu_);
    return figures_;
  }

 private:
  struct Conn {
    int fd = -1;
    bool connected = false;
    SteadyClock::time_point since, next;  // open since; the next byte (or reconnect) at
    std::size_t sent = 0;
  };

  std::chrono::milliseconds between(int lo, int hi) {
    return std::chrono::milliseconds(std::uniform_int_distribution<int>(lo, hi)(rng_));
  }
  // The endless request, one byte at a time.
  char byte(std::size_t i) const {
    static const std::string plain = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    // A TLS 1.2 record carrying a 512-byte ClientHello, then its body.
    static const std::string hello = std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    const std::string& head = o_.tls ? hello : plain;
    return i < head.size() ? head[i] : (o_.tls ? '\x00' : 'a');
  }
  void open(std::size_t i, SteadyClock::time_point now) {
    Conn& c = conns_[i];
    c = Conn{};
    c.fd = connect_from(o_.sources[i % o_.sources.size()], o_.port);
    if (c.fd < 0) {
      c.next = now + between(500, 1500);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = i;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
    c.since = c.next = now;
    std::lock_guard lock(mu_);
    ++figures_.opened;
  }
  void closed(std::size_t i, SteadyClock::time_point now, bool by_server) {
    Conn& c = conns_[i];
    if (c.connected) {
      std::lock_guard lock(mu_);
      --open_;
      figures_.longest_held_s =
          std::max(figures_.longest_held_s, std::chrono::duration<double>(now - c.since).count());
      if (by_server) ++figures_.closed_by_server;
    }
    ::close(c.fd);
    c = Conn{};
    c.next = now + between(500, 1500);
  }
  void run() {
    std::vector<epoll_event> events(1024);
    while (!stop_) {
      const int n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 50);
      auto now = SteadyClock::now();
      for (int k = 0; k < n; ++k) {
        const auto i = static_cast<std::size_t>(events[static_cast<std::size_t>(k)].data.u64);
        char buf[4096];
        ssize_t got;
        while ((got = ::recv(conns_[i].fd, buf, sizeof buf, 0)) > 0) {
        }
        if (got == 0 || (errno != EAGAIN && errno != EINTR)) closed(i, now, true);
      }
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        Conn& c = conns_[i];
        if (now < c.next) continue;
        if (c.fd < 0) {
          open(i, now);
          continue;
        }
        const char b = byte(c.sent);
        const ssize_t w = ::send(c.fd, &b, 1, MSG_NOSIGNAL);
        if (w == 1) {
          ++c.sent;
          if (!c.connected) {
            c.connected = true;
            std::lock_guard lock(mu_);
            figures_.peak_open = std::max(figures_.peak_open, ++open_);
            cv_.notify_all();
          }
          c.next = now + between(1000, 2000);
        } else if (errno == EAGAIN || errno == EINTR) {
          c.next = now + std::chrono::milliseconds(50);  // still connecting
        } else {
          closed(i, now, true);
        }
      }
    }
    const auto now = SteadyClock::now();
    for (std::size_t i = 0; i < conns_.size(); ++i)
      if (conns_[i].fd >= 0) closed(i, now, false);
  }

  Options o_;
  std::vector<Conn> conns_;
  std::mt19937 rng_{19};
  int epoll_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int open_ = 0;
  Figures figures_;
  std::thread thread_;
};

struct ProbeResult {
  int status = 0;  // of the answer; 0: none (error says why)
  double ms = 0;   // connect() to the answer's last byte, or to the failure
  std::string error;
};

// GET `path` on a new connection from `source`, over TLS when ca_file is set
// (the chain verified against it), with Connection: close; the whole
// exchange within `deadline`.
inline ProbeResult probe(int port, std::uint32_t source, const std::string& path, const std::string& ca_file,
                         std::chrono::milliseconds deadline) {
  ProbeResult r;
  const auto t0 = SteadyClock::now();
  const auto end = t0 + deadline;
  auto finish = [&](std::string error) {
    r.ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
    r.error = std::move(error);
    return r;
  };
  const int fd = connect_from(source, port);
  if (fd < 0) return finish(std::string("connect: ") + std::strerror(errno));
  int nodelay = 1;  // as curl does: the request is not held behind the handshake's last ACK
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
  struct Closer {
    int fd;
    gnutls_session_t s = nullptr;
    gnutls_certificate_credentials_t cred = nullptr;
    ~Closer() {
      if (s) gnutls_deinit(s);
      if (cred) gnutls_certificate_free_credentials(cred);
      ::close(fd);
    }
  } closer{fd};
  // Waits for the socket (events), false at the deadline.
  auto wait = [&](short events) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now()).count();
    pollfd p{fd, events, 0};
    return ms > 0 && ::poll(&p, 1, static_cast<int>(ms)) > 0;
  };
  if (!wait(POLLOUT)) return finish("connect: no connection before the deadline");
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
    return finish(std::string("connect: ") + std::strerror(err));
  if (!ca_file.empty()) {
    gnutls_certificate_allocate_credentials(&closer.cred);
    if (gnutls_certificate_set_x509_trust_file(closer.cred, ca_file.c_str(), GNUTLS_X509_FMT_PEM) <= 0)
      return finish("cannot read the CA file " + ca_file);
    gnutls_init(&closer.s, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
    gnutls_set_default_priority(closer.s);
    gnutls_credentials_set(closer.s, GNUTLS_CRD_CERTIFICATE, closer.cred);
    gnutls_session_set_verify_cert(closer.s, nullptr, 0);
    gnutls_transport_set_int(closer.s, fd);
    int rc;
    while ((rc = gnutls_handshake(closer.s)) < 0) {
      if (gnutls_error_is_fatal(rc)) return finish(std::string("TLS handshake: ") + gnutls_strerror(rc));
      if (!wait(gnutls_record_get_direction(closer.s) ? POLLOUT : POLLIN))
        return finish("TLS handshake: not done before the deadline");
    }
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  for (std::size_t done = 0; done < request.size();) {
    const ssize_t n = closer.s ? gnutls_record_send(closer.s, request.data() + done, request.size() - done)
                               : ::send(fd, request.data() + done, request.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if ((closer.s && n == GNUTLS_E_AGAIN) || (!closer.s && n < 0 && errno == EAGAIN)) {
      if (!wait(POLLOUT)) return finish("send: not sent before the deadline");
    } else {
      return finish("send: the connection was closed");
    }
  }
  // Read until the whole answer (its Content-Length) or the end of the stream.
  std::string text;
  while (true) {
    const auto head_end = text.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      std::string lower;
      for (char ch : text.substr(0, head_end))
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const auto cl = lower.find("\r\ncontent-length:");
      if (cl != std::string::npos && text.size() >= head_end + 4 + std::stoul(lower.substr(cl + 17))) break;
    }
    char buf[4096];
    const ssize_t n =
        closer.s ? gnutls_record_recv(closer.s, buf, sizeof buf) : ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
    } else if ((closer.s && n == GNUTLS_E_AGAIN) || (!closer.s && n < 0 && errno == EAGAIN)) {
      if (!wait(POLLIN))
        return finish("no whole answer before the deadline (" + std::to_string(text.size()) + " bytes)");
    } else {
      if (text.empty()) return finish("the server closed the connection without an answer");
      break;
    }
  }
  if (text.size() >= 12 && text.compare(0, 7, "HTTP/1.") == 0)
    r.status = std::atoi(text.substr(9, 3).c_str());
  return finish(r.status ? "" : "not an HTTP answer: " + text.substr(0, 80));
}

}  // namespace virtcap::testing
