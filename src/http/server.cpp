#include "http/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <set>
#include <sstream>
#include <utility>

#include "common/json_text.h"
#include "common/net_address.h"
#include "common/time.h"
#include "common/time_text.h"
#include "config/config.h"
#include "http/tls.h"

namespace virtcap::http {

namespace {

// Past the body limit the rest of a body is read and dropped (so the client,
// still writing, gets its 413 rather than a reset), but only up to this
// much; beyond it the connection is closed.
constexpr std::size_t kMaxDiscardBytes = 64 * 1024 * 1024;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Percent-decoding for the path and the query, except that %00 stays as the
// three characters: the path reaches us as a C string, and a decoded NUL
// would silently cut it.
size_t unescape(void*, MHD_Connection*, char* s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  char* out = s;
  for (const char* in = s; *in;) {
    if (in[0] == '%' && hex(in[1]) >= 0 && hex(in[2]) >= 0 && !(in[1] == '0' && in[2] == '0')) {
      *out++ = static_cast<char>(hex(in[1]) * 16 + hex(in[2]));
      in += 3;
    } else {
      *out++ = *in++;
    }
  }
  *out = '\0';
  return static_cast<size_t>(out - s);
}

// Segment-wise match; "{x}" matches one non-empty segment and is captured.
bool matches(std::string_view tmpl, std::string_view path, std::map<std::string, std::string>& params) {
  while (!tmpl.empty() || !path.empty()) {
    if (tmpl.empty() || path.empty() || tmpl[0] != '/' || path[0] != '/') return false;
    tmpl.remove_prefix(1);
    path.remove_prefix(1);
    const auto tseg = tmpl.substr(0, tmpl.find('/')), pseg = path.substr(0, path.find('/'));
    if (tseg.starts_with('{')) {
      if (pseg.empty()) return false;
      params[std::string(tseg.substr(1, tseg.size() - 2))] = std::string(pseg);
    } else if (tseg != pseg) {
      return false;
    }
    tmpl.remove_prefix(tseg.size());
    path.remove_prefix(pseg.size());
  }
  return true;
}

// "host:port", "[v6]:port" or "host" -> the host, lower-cased.
std::string host_part(const std::string& v) {
  if (!v.empty() && v[0] == '[') {
    const auto close = v.find(']');
    return close == std::string::npos ? v : lower(v.substr(1, close - 1));
  }
  const auto colon = v.find(':');
  if (colon != std::string::npos && v.find(':', colon + 1) == std::string::npos)
    return lower(v.substr(0, colon));
  return lower(v);
}

bool is_ip_literal(const std::string& h) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

bool is_wildcard(const std::string& h) { return h == "0.0.0.0" || h == "::" || h.empty(); }

std::string address_text(const sockaddr* sa) {
  if (!sa) return "";
  char buf[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  else if (sa->sa_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  return buf;
}

// Makes room for `connections` sockets besides the process's other files:
// raises the soft open-file limit to the hard one when it is lower than
// that (a distribution's default soft limit is often 1,024). Logged.
void fit_open_file_limit(unsigned connections, const std::string& section) {
  constexpr rlim_t kOtherFiles = 256;  // database, logs, listening sockets, children's pipes
  const rlim_t want = connections + kOtherFiles;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  const rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (rl.rlim_cur > before && ::setrlimit(RLIMIT_NOFILE, &rl) == 0)
    spdlog::info("open-file limit raised from {} to {} (its hard limit) for {} max_connections = {}", before,
                 rl.rlim_cur, section, connections);
  else
    rl.rlim_cur = before;
  if (rl.rlim_cur < want)
    spdlog::warn(
        "the open-file limit ({}) leaves room for about {} connections, fewer than {} max_connections = {}; "
        "raise the hard limit (LimitNOFILE= in a systemd unit) or lower max_connections",
        rl.rlim_cur, rl.rlim_cur > kOtherFiles ? rl.rlim_cur - kOtherFiles : 0, section, connections);
}

void log_from_library(void*, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string s(buf);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  spdlog::debug("http: {}", s);
}

}  // namespace

std::string Request::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

Response json_response(int status, const nlohmann::json& body) {
  Response r;
  r.status = status;
  r.body = dump_json(body) + "\n";
  return r;
}

Response error_response(int status, const std::string& code, const std::string& message) {
  return json_response(status, nlohmann::json{{"error", {{"code", code}, {"message", message}}}});
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : v + ",") {
    if (c == ',' || c == ' ' || c == '\t') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Compares every byte of the longer input, so the time does not depend on
  // where the first difference is (the length still shows).
  const std::size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

Result<std::string> check_listen(const Options& o) {
  const std::string& section = o.config_section;
  auto hp = split_listen(o.listen);
  if (!hp) return make_error(Errc::invalid_argument, section + " listen '" + o.listen + "' is not HOST:PORT");
  if (auto st = check_tls_pair(o.tls_cert, o.tls_key, section); !st.ok()) return st.error();
  if (auto st =
          check_tls_priority(o.tls_priority.empty() ? config::kDefaultTlsPriority : o.tls_priority, section);
      !st.ok())
    return st.error();
  if (is_loopback(hp->first)) return std::string();
  if (o.anonymous_access && !o.anonymous_access->empty())
    return make_error(Errc::invalid_argument, "refusing to listen on " + o.listen +
                                                  ": it is not a loopback address and " +
                                                  *o.anonymous_access +
                                                  " serves requests that carry no credential; "
                                                  "remove it, or listen on 127.0.0.1");
  if (!o.anonymous_access && o.token.empty())
    return make_error(Errc::invalid_argument, "refusing to listen on " + o.listen +
                                                  ": it is not a loopback address and " + section +
                                                  " token is not set; set a token, or listen on 127.0.0.1");
  if (!o.tls_cert.empty()) return std::string();
  const std::string why =
      "it is not a loopback address, and without TLS the bearer token and every answer cross "
      "the network in clear text";
  if (!o.allow_insecure)
    return make_error(Errc::invalid_argument, "refusing to listen on " + o.listen + " without TLS: " + why +
                                                  "; set " + section +
                                                  " tls_cert and tls_key (or allow_insecure = true)");
  return "serving plain HTTP on " + o.listen + " because " + section + " allow_insecure = true: " + why;
}

struct Server::Pending {
  const Server::DaemonTag* daemon = nullptr;  // the daemon that accepted the connection
  Request req;
  const Route* route = nullptr;
  std::string route_name = "unmatched";
  std::optional<Response> refusal;
  std::size_t discarded = 0;
  bool answered = false;
};

Server::Server(Options opts, std::vector<Route> routes) : opts_(std::move(opts)), routes_(std::move(routes)) {
  if (opts_.tls_priority.empty()) opts_.tls_priority = config::kDefaultTlsPriority;
}

Server::~Server() {
  stop();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (opts_.listen_fd >= 0) ::close(opts_.listen_fd);  // handed over, never adopted
}

Result<int> listen_socket(const std::string& listen) {
  const auto hp = split_listen(listen);
  if (!hp) return make_error(Errc::invalid_argument, "listen address '" + listen + "' is not HOST:PORT");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(hp->second);
  if (int rc = ::getaddrinfo(hp->first.c_str(), port_text.c_str(), &hints, &res); rc != 0)
    return make_error(Errc::invalid_argument,
                      "cannot resolve listen address " + listen + ": " + gai_strerror(rc));
  int listen_fd = -1, err = 0;
  for (addrinfo* ai = res; ai && listen_fd < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    // SO_REUSEADDR only: SO_REUSEPORT would let a second agent share the port.
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    // The kernel's largest backlog: a burst of connections (thousands of
    // clients reconnecting at once) waits there rather than being dropped.
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
      listen_fd = fd;
    } else {
      err = errno;
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  if (listen_fd >= 0) return listen_fd;
  if (err == EADDRINUSE)
    return make_error(Errc::io_error,
                      "cannot listen on " + listen +
                          ": the address is in use (another virtcap agent, or another service); "
                          "stop it, or listen elsewhere");
  return make_error(Errc::io_error, "cannot listen on " + listen + ": " +
                                        (err ? std::strerror(err) : "no address") +
                                        " (the address is not available on this host)");
}

Result<int> Server::bind() {
  auto warning = check_listen(opts_);
  if (!warning.ok()) return warning.error();
  if (!warning->empty()) spdlog::warn("{}", *warning);
  fit_open_file_limit(opts_.max_connections, opts_.config_section);
  const auto hp = split_listen(opts_.listen);
  listen_host_ = lower(hp->first);
  auto tls = load_tls(opts_.tls_cert, opts_.tls_key, opts_.config_section, now_seconds());
  if (!tls.ok()) return tls.error();
  if (tls.value()) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
      return make_error(Errc::invalid_argument, "this libmicrohttpd was built without TLS support");
    tls_cert_pem_ = std::move(tls.value()->cert_pem);
    tls_key_pem_ = std::move(tls.value()->key_pem);
    spdlog::info("TLS: serving the certificate of {} (valid until {})", tls.value()->subject,
                 utc_text(tls.value()->not_after));
    auto ca = load_client_ca(opts_.tls_client_ca, opts_.config_section);
    if (!ca.ok()) return ca.error();
    tls_client_ca_pem_ = std::move(*ca);
    if (!tls_client_ca_pem_.empty())
      spdlog::info("TLS: client certificates signed by {} are verified", opts_.tls_client_ca);
  } else if (!opts_.tls_client_ca.empty()) {
    return make_error(Errc::invalid_argument,
                      opts_.config_section +
                          " client_ca is set without tls_cert and "
                          "tls_key: client certificates need TLS; set both, or remove client_ca");
  }
  if (opts_.listen_fd >= 0) {
    listen_fd_ = std::exchange(opts_.listen_fd, -1);
  } else {
    auto fd = listen_socket(opts_.listen);
    if (!fd.ok()) return fd.error();
    listen_fd_ = fd.value();
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return port_;
}

namespace {

MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                      const char* data, size_t* size, void** con_cls) {
  auto* tag = static_cast<Server::DaemonTag*>(cls);
  Server* self = tag->server;
  auto* p = static_cast<Server::Pending*>(*con_cls);
  if (!p) {
    *con_cls = self->begin(c, url, method, tag);
    return MHD_YES;
  }
  if (*size > 0) {
    const bool keep = self->take(*p, data, *size);
    *size = 0;
    return keep ? MHD_YES : MHD_NO;
  }
  // No response could be made (out of memory): MHD_NO closes the connection.
  return self->answer(c, *p) ? MHD_YES : MHD_NO;
}

void on_connection(void* cls, MHD_Connection* c, void**, MHD_ConnectionNotificationCode code) {
  auto* tag = static_cast<Server::DaemonTag*>(cls);
  tag->server->connection_event(tag, c, code == MHD_CONNECTION_NOTIFY_STARTED);
}

void on_completed(void* cls, MHD_Connection* c, void** con_cls, MHD_RequestTerminationCode code) {
  static_cast<Server::DaemonTag*>(cls)->server->finished(c, static_cast<Server::Pending*>(*con_cls),
                                                         code == MHD_REQUEST_TERMINATED_COMPLETED_OK);
  *con_cls = nullptr;
}

}  // namespace

Status Server::start() {
  if (listen_fd_ < 0) return make_error(Errc::internal, "start() before a successful bind()");
  // libmicrohttpd 0.9.75 owns the socket from here, and closes it itself if
  // it fails to start (every failure after its options were read).
  daemon_ = start_daemon(std::exchange(listen_fd_, -1), tls_cert_pem_, tls_key_pem_);
  if (!daemon_) return make_error(Errc::io_error, "cannot start the HTTP server on " + opts_.listen);
  reaper_ = std::thread([this] { reap(); });
  return {};
}

void Server::reap() {
  const auto limit = std::chrono::seconds(opts_.request_header_timeout_seconds);
  MutexLock lock(mu_);
  while (!reaper_stop_) {
    const auto now = std::chrono::steady_clock::now();
    auto next = now + limit;  // every deadline set later is later than this
    for (auto& [connection, e] : connections_) {
      if (!e.awaiting_headers || e.fd < 0) continue;
      if (e.header_deadline > now) {
        next = std::min(next, e.header_deadline);
        continue;
      }
      // The library's thread sees the end of the stream and closes the
      // connection; its close notification (which needs mu_, held here)
      // comes before the socket is closed, so e.fd is still this socket.
      ::shutdown(e.fd, SHUT_RDWR);
      e.fd = -1;
      spdlog::debug("HTTP server on {}: closed a connection whose request headers did not arrive within {} s",
                    opts_.listen, limit.count());
    }
    reaper_wake_.wait_until(mu_, next, [&] {
      mu_.assert_held();
      return reaper_stop_;
    });
  }
}

MHD_Daemon* Server::start_daemon(int listen_fd, const std::string& cert_pem, const std::string& key_pem) {
  // The callbacks get this daemon's tag: a thread pool's workers report
  // themselves, not the daemon started here, as a connection's daemon.
  auto tag = std::make_unique<DaemonTag>(DaemonTag{this});
  // poll(), not epoll: libmicrohttpd 0.9.75 with epoll does not notice a
  // client's half-close and holds the connection until the idle timeout.
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_POLL;
  if (!cert_pem.empty()) flags |= MHD_USE_TLS;
  std::vector<MHD_OptionItem> o = {
      {MHD_OPTION_LISTEN_SOCKET, listen_fd, nullptr},
      {MHD_OPTION_THREAD_POOL_SIZE, static_cast<intptr_t>(opts_.threads), nullptr},
      {MHD_OPTION_CONNECTION_LIMIT, static_cast<intptr_t>(opts_.max_connections), nullptr},
      {MHD_OPTION_PER_IP_CONNECTION_LIMIT, static_cast<intptr_t>(opts_.max_connections_per_address), nullptr},
      // Reset by every byte; the header deadline (reap()) is not.
      {MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(opts_.idle_timeout_seconds), nullptr},
      // Headers and every query parameter live in this per-connection pool
      // (pages touched only as used); 64 KiB dropped a request carrying
      // 1,000 query parameters without an answer, 256 KiB lets the
      // application refuse it with its 400.
      {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 256 * 1024, nullptr},
      {MHD_OPTION_STRICT_FOR_CLIENT, 1, nullptr},
      {MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&on_completed), tag.get()},
      {MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&on_connection), tag.get()},
      {MHD_OPTION_UNESCAPE_CALLBACK, reinterpret_cast<intptr_t>(&unescape), nullptr},
      {MHD_OPTION_EXTERNAL_LOGGER, reinterpret_cast<intptr_t>(&log_from_library), nullptr},
  };
  if (!cert_pem.empty()) {
    // The library reads the PEM text only while it starts (GnuTLS keeps its
    // own parsed copy).
    o.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(cert_pem.data())});
    o.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(key_pem.data())});
    // TLS 1.3, and 1.2 with ECDHE and AEAD only, by default (Options::tls_priority).
    o.push_back({MHD_OPTION_HTTPS_PRIORITIES, 0, const_cast<char*>(opts_.tls_priority.c_str())});
    // Asks each client for a certificate (optional), verified in begin().
    if (!tls_client_ca_pem_.empty())
      o.push_back({MHD_OPTION_HTTPS_MEM_TRUST, 0, const_cast<char*>(tls_client_ca_pem_.data())});
  }
  o.push_back({MHD_OPTION_END, 0, nullptr});
  MHD_Daemon* d = MHD_start_daemon(flags | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &on_request, tag.get(),
                                   MHD_OPTION_ARRAY, o.data(), MHD_OPTION_END);
  if (d) tags_[d] = std::move(tag);
  return d;
}

void Server::retire(MHD_Daemon* daemon, int quiesced_fd) {
  {
    MutexLock lock(mu_);
    const DaemonTag* tag = tags_[daemon].get();
    auto unserved = [&] {
      mu_.assert_held();
      return std::count_if(connections_.begin(), connections_.end(),
                           [&](const auto& e) { return e.second.daemon == tag && !e.second.served; });
    };
    const auto it = in_flight_.find(tag);
    const unsigned requests = it == in_flight_.end() ? 0 : it->second;
    if (const auto waiting = unserved(); requests > 0 || waiting > 0)
      spdlog::info(
          "HTTP server on {}: waiting for {} request(s) in flight and {} connection(s) whose request has "
          "not arrived yet (30 s at most)",
          opts_.listen, requests, waiting);
    idle_.wait_for(mu_, std::chrono::seconds(30), [&] {
      mu_.assert_held();
      return in_flight_.count(tag) == 0 && unserved() == 0;
    });
  }
  MHD_stop_daemon(daemon);
  tags_.erase(daemon);
  if (quiesced_fd != MHD_INVALID_SOCKET) ::close(quiesced_fd);
}

void Server::stop() {
  if (!daemon_) return;
  MHD_Daemon* d = std::exchange(daemon_, nullptr);
  retire(d, MHD_quiesce_daemon(d));  // no new connections, then the requests in flight
  {
    MutexLock lock(mu_);
    reaper_stop_ = true;
  }
  reaper_wake_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

Status Server::reload_tls() {
  if (!daemon_ || tls_cert_pem_.empty()) return {};  // plain HTTP: nothing to reload
  auto tls = load_tls(opts_.tls_cert, opts_.tls_key, opts_.config_section, now_seconds());
  if (!tls.ok()) return tls.error();
  if (!tls.value())  // load_tls refuses one file without the other; both gone cannot be
    return make_error(Errc::invalid_argument, "TLS files not reloaded: tls_cert and tls_key are empty");
  if (tls.value()->cert_pem == tls_cert_pem_ && tls.value()->key_pem == tls_key_pem_) {
    spdlog::info("TLS: {} and {} unchanged; still serving the certificate of {}", opts_.tls_cert,
                 opts_.tls_key, tls.value()->subject);
    return {};
  }
  // A second daemon on a duplicate of the same listening socket takes new
  // connections with the new pair; only then does the old one stop accepting,
  // finish the requests it has in flight (up to 30 s) and close. The socket
  // never closes, so no client is refused during the change.
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_LISTEN_FD);
  const int live_fd = info ? info->listen_fd : -1;
  const int fd = live_fd >= 0 ? ::fcntl(live_fd, F_DUPFD_CLOEXEC, 3) : -1;
  if (fd < 0)
    return make_error(Errc::io_error,
                      std::string("TLS files not reloaded: cannot share the listening socket: ") +
                          (live_fd >= 0 ? std::strerror(errno) : "no socket"));
  MHD_Daemon* fresh =
      start_daemon(fd, tls.value()->cert_pem, tls.value()->key_pem);  // owns fd, even on failure
  if (!fresh) {
    // A daemon that failed half-way shuts its socket down (shutdown(2)), and
    // a dup shares it with the daemon still serving: listen again if so.
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(live_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening == 0 &&
        ::listen(live_fd, SOMAXCONN) != 0)
      spdlog::critical(
          "HTTP server on {}: no longer accepting connections after a failed TLS reload ({}); "
          "restart it",
          opts_.listen, std::strerror(errno));
    return make_error(Errc::io_error, "TLS files not reloaded: the HTTP server could not start with them");
  }
  MHD_Daemon* old = std::exchange(daemon_, fresh);
  tls_cert_pem_ = std::move(tls.value()->cert_pem);
  tls_key_pem_ = std::move(tls.value()->key_pem);
  const MHD_socket old_fd = MHD_quiesce_daemon(old);
  spdlog::info("TLS: reloaded {}; serving the certificate of {} (valid until {})", opts_.tls_cert,
               tls.value()->subject, utc_text(tls.value()->not_after));
  retire(old, old_fd);
  return {};
}

const Route* Server::match(const Request& req, std::map<std::string, std::string>& params,
                           std::string& allow) const {
  const Route* found = nullptr;
  for (const auto& r : routes_) {
    std::map<std::string, std::string> p;
    if (!matches(r.pattern, req.path, p)) continue;
    if (allow.find(r.method) == std::string::npos) allow += (allow.empty() ? "" : ", ") + r.method;
    if (!found && r.method == req.method) {
      found = &r;
      params = std::move(p);
    }
  }
  return found;
}

bool Server::host_allowed(const std::string& host_header) const {
  const std::string h = host_part(host_header);
  if (h == "localhost" || h == listen_host_) return true;
  for (const auto& a : opts_.allowed_hosts)
    if (lower(a) == h) return true;
  if (is_loopback(listen_host_) && is_loopback(h) && is_ip_literal(h)) return true;
  return is_wildcard(listen_host_) && is_ip_literal(h);
}

std::optional<Response> Server::refuse_early(Request& req, bool has_body, const Route* route,
                                             const std::string& allow) const {
  if (req.headers.count("host") && !host_allowed(req.header("host")))
    return error_response(403, "forbidden",
                          "Host '" + req.header("host") + "' is not this server's address (" + opts_.listen +
                              ") or localhost; requests through other names are refused (DNS rebinding)");
  if (req.headers.count("origin")) {
    const auto& o = opts_.allowed_origins;
    if (std::find(o.begin(), o.end(), req.header("origin")) == o.end())
      return error_response(403, "forbidden",
                            "cross-origin request from '" + req.header("origin") +
                                "' refused; list the origin in " + opts_.config_section + " allowed_origins");
  }
  if (opts_.authenticate) {
    if (auto refused = opts_.authenticate(req)) return refused;
  } else if (!opts_.token.empty() &&
             !constant_time_equal(req.header("authorization"), "Bearer " + opts_.token)) {
    auto r = error_response(401, "unauthorized",
                            "a valid bearer token is required (Authorization: Bearer <token>)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  }
  if (allow.empty()) return error_response(404, "not_found", "no route " + req.method + " " + req.path);
  if (!route) {
    auto r = error_response(405, "method_not_allowed",
                            req.method + " is not allowed on " + req.path + "; allowed: " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  if (!has_body) return std::nullopt;
  if (route->body == BodyRule::none)
    return error_response(400, "invalid_argument",
                          req.method + " " + route->pattern + " takes no request body");
  const std::string ct = lower(req.header("content-type"));
  const std::string media = ct.substr(0, ct.find(';'));
  if (media.find_first_not_of(' ') == std::string::npos ||
      media.substr(0, media.find_last_not_of(' ') + 1) != "application/json")
    return error_response(415, "unsupported_media_type",
                          "a request body must be JSON, sent with Content-Type: application/json");
  const std::string cl = req.header("content-length");
  if (!cl.empty() && (cl.size() > 15 || std::stoull(cl) > opts_.max_body_bytes))
    return error_response(
        413, "payload_too_large",
        "request body exceeds the limit of " + std::to_string(opts_.max_body_bytes) + " bytes");
  return std::nullopt;
}

Server::Pending* Server::begin(void* connection, const char* url, const char* method,
                               const DaemonTag* daemon) {
  auto* c = static_cast<MHD_Connection*>(connection);
  auto p = std::make_unique<Pending>();
  Request& req = p->req;
  req.method = method;
  req.path = url;
  std::set<std::string> repeated;
  struct Ctx {
    Request* req;
    std::set<std::string>* repeated;
  } ctx{&req, &repeated};
  // With lengths: a value is never cut at a NUL byte (a C-string read would
  // take "Bearer <token>\0anything" for the token).
  MHD_get_connection_values_n(
      c, MHD_HEADER_KIND,
      [](void* cls, MHD_ValueKind, const char* k, size_t kn, const char* v, size_t vn) -> MHD_Result {
        auto* x = static_cast<Ctx*>(cls);
        const std::string name = lower(std::string(k, kn));
        if (!x->req->headers.emplace(name, v ? std::string(v, vn) : std::string()).second)
          x->repeated->insert(name);
        return MHD_YES;
      },
      &ctx);
  MHD_get_connection_values_n(
      c, MHD_GET_ARGUMENT_KIND,
      [](void* cls, MHD_ValueKind, const char* k, size_t kn, const char* v, size_t vn) -> MHD_Result {
        auto* r = static_cast<Request*>(cls);
        r->query_list.emplace_back(std::string(k, kn), v ? std::string(v, vn) : std::string());
        r->query[r->query_list.back().first] = r->query_list.back().second;
        return MHD_YES;
      },
      &req);
  if (const auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS))
    req.remote_addr = address_text(info->client_addr);
  if (!tls_client_ca_pem_.empty())
    if (const auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION))
      req.client_certificate = verified_client_certificate(info->tls_session);

  std::string allow;
  p->route = match(req, req.params, allow);
  if (p->route) p->route_name = p->route->pattern;
  const std::string cl = req.header("content-length");
  const bool has_body = req.headers.count("transfer-encoding") ||
                        (!cl.empty() && cl.find_first_not_of('0') != std::string::npos);
  for (const char* h :
       {"host", "origin", "authorization", "content-type", "content-length", "transfer-encoding"})
    if (repeated.count(h))
      p->refusal = error_response(400, "invalid_argument", std::string("repeated ") + h + " header");
  for (const auto& [name, value] : req.headers)
    if (name.find('\0') != std::string::npos || value.find('\0') != std::string::npos)
      p->refusal = error_response(400, "invalid_argument", "a header contains a NUL byte");
  if (cl.find_first_not_of("0123456789") != std::string::npos)
    p->refusal = error_response(400, "invalid_argument", "malformed Content-Length");
  if (!p->refusal) p->refusal = refuse_early(req, has_body, p->route, allow);
  p->daemon = daemon;
  {
    MutexLock lock(mu_);
    ++in_flight_[p->daemon];
    if (auto it = connections_.find(connection); it != connections_.end())
      it->second.awaiting_headers = false, it->second.served = true;
  }
  return p.release();
}

bool Server::take(Pending& p, const char* data, std::size_t size) {
  if (!p.refusal && p.route && p.route->body == BodyRule::none)
    p.refusal = error_response(400, "invalid_argument",
                               p.req.method + " " + p.route->pattern + " takes no request body");
  if (!p.refusal && p.req.body.size() + size > opts_.max_body_bytes) {
    p.refusal = error_response(
        413, "payload_too_large",
        "request body exceeds the limit of " + std::to_string(opts_.max_body_bytes) + " bytes");
    std::string().swap(p.req.body);
  }
  if (p.refusal) {
    p.discarded += size;
    return p.discarded <= kMaxDiscardBytes;
  }
  p.req.body.append(data, size);
  return true;
}

bool Server::answer(void* connection, Pending& p) {
  auto* c = static_cast<MHD_Connection*>(connection);
  Response res;
  if (p.refusal) {
    res = std::move(*p.refusal);
  } else {
    try {
      res = p.route->handler(p.req);
    } catch (const std::exception& e) {
      spdlog::error("HTTP handler for {} {} failed: {}", p.req.method, p.route->pattern, e.what());
      res = error_response(500, "internal", std::string("internal error: ") + e.what());
    } catch (...) {
      res = error_response(500, "internal", "internal error");
    }
  }
  const auto& origins = opts_.allowed_origins;
  if (p.req.headers.count("origin") &&
      std::find(origins.begin(), origins.end(), p.req.header("origin")) != origins.end()) {
    res.headers.emplace_back("Access-Control-Allow-Origin", p.req.header("origin"));
    res.headers.emplace_back("Vary", "Origin");
  }
  // The body is handed over or shared, never copied (a 1,000-instance list
  // is 200 KB); the response holds it until libmicrohttpd has sent it.
  using Shared = std::shared_ptr<const std::string>;
  auto* owned = new Shared(res.shared_body ? std::move(res.shared_body)
                                           : std::make_shared<const std::string>(std::move(res.body)));
  MHD_Response* r = MHD_create_response_from_buffer_with_free_callback_cls(
      (*owned)->size(), const_cast<char*>((*owned)->data()),
      [](void* cls) { delete static_cast<Shared*>(cls); }, owned);
  if (r == nullptr) {  // the free callback will never run
    delete owned;
    spdlog::error("HTTP: cannot create the response to {} {}; closing the connection", p.req.method,
                  p.route_name);
    return false;
  }
  if (!res.content_type.empty()) MHD_add_response_header(r, "Content-Type", res.content_type.c_str());
  for (const auto& [k, v] : res.headers) MHD_add_response_header(r, k.c_str(), v.c_str());
  MHD_queue_response(c, static_cast<unsigned>(res.status), r);
  MHD_destroy_response(r);
  p.answered = true;
  if (opts_.on_response) opts_.on_response(p.req, p.route_name, res.status);
  return true;
}

void Server::connection_event(const DaemonTag* tag, void* connection, bool opened) {
  if (opened) spdlog::trace("HTTP server on {}: connection accepted", opts_.listen);
  const auto* info = opened ? MHD_get_connection_info(static_cast<MHD_Connection*>(connection),
                                                      MHD_CONNECTION_INFO_CONNECTION_FD)
                            : nullptr;
  MutexLock lock(mu_);
  if (opened) {
    connections_[connection] = {
        tag, info ? info->connect_fd : -1,
        std::chrono::steady_clock::now() + std::chrono::seconds(opts_.request_header_timeout_seconds)};
    return;
  }
  const auto it = connections_.find(connection);
  if (it == connections_.end()) return;
  const bool unserved = !it->second.served;
  connections_.erase(it);
  if (unserved) idle_.notify_all();
}

void Server::finished(void* connection, Pending* p, bool completed) {
  if (!p) return;
  if (completed) {  // the connection now waits for its next request
    MutexLock lock(mu_);
    if (auto it = connections_.find(connection); it != connections_.end()) {
      it->second.awaiting_headers = true;
      it->second.header_deadline =
          std::chrono::steady_clock::now() + std::chrono::seconds(opts_.request_header_timeout_seconds);
    }
  }
  const DaemonTag* daemon = p->daemon;
  delete p;
  MutexLock lock(mu_);
  if (auto it = in_flight_.find(daemon); it != in_flight_.end() && --it->second == 0) {
    in_flight_.erase(it);
    idle_.notify_all();
  }
}

}  // namespace virtcap::http
