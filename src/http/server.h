// A small, hardened HTTP/JSON server on GNU libmicrohttpd (docs/design.md has
// why). It owns every rule that does not depend on the application: the
// bearer token (constant-time compare), Host and Origin checks, the JSON
// Content-Type rule, body limits counted as bytes arrive (chunked included),
// JSON error bodies, 404 and 405 with Allow. Applications (the agent API, the
// fleet service) add routes.
#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "http/tls.h"
#include "virtcap/error.h"

struct MHD_Daemon;

namespace virtcap::http {

struct Request {
  std::string method;
  std::string path;                                             // percent-decoded (a %00 stays literal)
  std::map<std::string, std::string> query;                     // decoded (a repeated name: its last value)
  std::vector<std::pair<std::string, std::string>> query_list;  // decoded, every parameter in order
  std::map<std::string, std::string> headers;                   // names lower-cased
  std::map<std::string, std::string> params;                    // {name} segments of the route
  std::string body;
  std::string remote_addr;
  // The client's TLS certificate, when Options::tls_client_ca is set and the
  // certificate it sent verified against it (tls.h); nullopt otherwise.
  std::optional<ClientCertificate> client_certificate;
  // Who the request is from, as Options::authenticate set it (the
  // application's own type); empty without that hook.
  std::any auth;
  std::string header(const std::string& lower_name) const;
  std::string param(const std::string& name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, sent instead of `body`, shared rather than copied (a page the
  // handler keeps for later requests).
  std::shared_ptr<const std::string> shared_body;
};

// A JSON response: the value dumped with the replacing helper, plus "\n".
Response json_response(int status, const nlohmann::json& body);
// {"error": {"code": code, "message": message}}
Response error_response(int status, const std::string& code, const std::string& message);

// Whether a route takes a request body. A body-less route refuses any body
// byte (400); a JSON route requires Content-Type: application/json (415).
enum class BodyRule { none, json };

struct Route {
  std::string method;
  std::string pattern;  // "/v1/instances/{id}": {x} matches one non-empty segment
  BodyRule body = BodyRule::none;
  std::function<Response(const Request&)> handler;
};

struct Options {
  std::string listen = "127.0.0.1:0";        // HOST:PORT; port 0: any free port
  std::string token;                         // bearer token every request must carry, when set
  std::vector<std::string> allowed_origins;  // an Origin header must be one of these
  std::vector<std::string> allowed_hosts;    // Host names accepted besides the listen host and localhost
  std::size_t max_body_bytes = 1024 * 1024;
  std::string tls_cert, tls_key;  // PEM files; both set: HTTPS (checked by load_tls in bind())
  // PEM CA bundle: with TLS, clients are asked (not required) for a
  // certificate, which is verified against it (Request::client_certificate).
  std::string tls_client_ca;
  // When set, replaces the `token` rule: called for every request after the
  // Host and Origin checks and before routing; a response refuses the request
  // (a 401), else it may fill req.auth for the handlers.
  std::function<std::optional<Response>(Request&)> authenticate;
  // For an application that authenticates requests itself (authenticate):
  // the setting that lets requests without any credential in, for
  // check_listen's refusal of a non-loopback address ("" when none get in).
  // nullopt: the `token` rule (no token, no credential needed).
  std::optional<std::string> anonymous_access;
  std::string
      tls_priority;  // GnuTLS priority string; empty: config::kDefaultTlsPriority (check_listen checks it)
  // Serve plain HTTP on a non-loopback address anyway (check_listen); a
  // warning is logged at every start.
  bool allow_insecure = false;
  // Polling threads (libmicrohttpd's pool). A connection stays on the thread
  // that accepted it, so a long handler delays the other connections of
  // that thread (not the whole server).
  unsigned threads = 8;
  // Connections held at once; more are closed as they are accepted. bind()
  // raises the process's open-file limit (soft, up to hard) to fit them.
  unsigned max_connections = 4096;
  // Connections one client address may hold at once; more are closed as
  // they are accepted, so one address cannot take every slot.
  unsigned max_connections_per_address = 32;
  // A connection whose request headers are not all in this long after it
  // was accepted (TLS handshake included), or after the end of its previous
  // request, is closed; bytes arriving do not extend it (slowloris).
  unsigned request_header_timeout_seconds = 10;
  unsigned idle_timeout_seconds = 10;
  // Called once per answered request (metrics, logs); route is the matched
  // pattern or "unmatched".
  std::function<void(const Request&, const std::string& route, int status)> on_response;
  // What the listen and TLS checks name in their refusals, e.g. "[api]".
  std::string config_section = "[api]";
  // A socket listen_socket() already bound to `listen`, which bind() then
  // adopts (the server owns it from construction); -1: bind() binds itself.
  int listen_fd = -1;
};

// A URL path segment or query value: RFC 3986 unreserved bytes stay,
// every other byte is %XX (so any text, even invalid UTF-8, is a safe part).
std::string percent_encode(std::string_view s);

// Whether a == b, reading every byte of the longer one whatever they hold
// (for secrets: the time tells only the length).
bool constant_time_equal(std::string_view a, std::string_view b);

// A configured list, comma- or blank-separated: "a, b c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& v);

// The one rule for where and how a server may listen (every virtcap server):
// listen is HOST:PORT; tls_cert and tls_key are set together; a non-loopback
// address needs a token (anonymous_access: none), and TLS unless allow_insecure. invalid_argument
// (naming config_section) when refused. When allowed: the warning to log at
// every start (plain HTTP off loopback), or "". Reads no file (load_tls does).
Result<std::string> check_listen(const Options& opts);

// Binds and listens on HOST:PORT (SO_REUSEADDR, never SO_REUSEPORT); the
// caller owns the fd. io_error naming the address when it is taken or not
// on this host, invalid_argument when it cannot be resolved.
Result<int> listen_socket(const std::string& listen);

class Server {
 public:
  Server(Options opts, std::vector<Route> routes);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Checks the listen address (check_listen, logging its warning) and the
  // TLS files (load_tls), binds and listens; returns the bound port. Then
  // start().
  Result<int> bind();
  // "https" when serving TLS, else "http" (after bind()).
  const char* scheme() const { return tls_cert_pem_.empty() ? "http" : "https"; }
  // Serves on the library's threads; returns once accepting.
  Status start();
  // Stops accepting, lets in-flight requests finish, and serves the
  // connections already accepted whose request had not arrived (up to 30 s
  // in all), closes every connection. Idempotent.
  void stop();
  // Reads tls_cert and tls_key again, with load_tls's checks, and serves the
  // new pair on every new connection; requests in flight finish on the old
  // one (up to 30 s), and the listening socket never closes. Refused (the
  // old pair still served) when the files are refused; unchanged files
  // change nothing. A server started without TLS has nothing to reload.
  // Not concurrently with stop() (both run on the thread that handles
  // signals).
  Status reload_tls();

  // Implementation detail, public for the C callbacks.
  struct Pending;
  bool answer(void* connection, Pending& p);  // false: no response could be made
  // Which of the server's daemons a callback comes from (one; two while a
  // TLS reload lets the old one finish).
  struct DaemonTag {
    Server* server;
  };
  Pending* begin(void* connection, const char* url, const char* method, const DaemonTag* daemon);
  bool take(Pending& p, const char* data, std::size_t size);  // false: close the connection
  // A request ended; `completed`: answered in full, so the connection waits
  // for its next request (a new header deadline).
  void finished(void* connection, Pending* p, bool completed);
  // A connection accepted (opened) or closed by `tag`'s daemon.
  void connection_event(const DaemonTag* tag, void* connection, bool opened);

 private:
  // The route for req's method and path (params filled), and in `allow`
  // every method the path has.
  const Route* match(const Request& req, std::map<std::string, std::string>& params,
                     std::string& allow) const;
  std::optional<Response> refuse_early(Request& req, bool has_body, const Route* route,
                                       const std::string& allow) const;
  bool host_allowed(const std::string& host) const;
  // A libmicrohttpd daemon on `listen_fd` (it takes the fd), serving TLS
  // with the pair when cert_pem is not empty; nullptr when it cannot start.
  MHD_Daemon* start_daemon(int listen_fd, const std::string& cert_pem, const std::string& key_pem);
  // For a quiesced `daemon` (no longer accepting): waits (up to 30 s) for
  // its requests in flight and for the connections it accepted whose first
  // request has not arrived yet (the header deadline closes late ones),
  // then stops it, closing idle keep-alive connections, and closes the fd
  // quiescing returned.
  void retire(MHD_Daemon* daemon, int quiesced_fd);
  // The reaper thread: shuts down (shutdown(2); the library's thread then
  // closes it) each connection past its header deadline, until stop().
  void reap();

  Options opts_;
  std::vector<Route> routes_;
  std::string listen_host_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::string tls_cert_pem_, tls_key_pem_, tls_client_ca_pem_;
  MHD_Daemon* daemon_ = nullptr;
  Mutex mu_;
  CondVar idle_;
  std::map<const DaemonTag*, unsigned> in_flight_
      GUARDED_BY(mu_);                                      // requests begun and not finished, per daemon
  std::map<MHD_Daemon*, std::unique_ptr<DaemonTag>> tags_;  // the callbacks' cls of each running daemon
  // Every open connection, from the library's open notification to its
  // close notification (which comes before the library closes the socket,
  // so `fd` is never another connection's while it is listed here).
  struct Connection {
    const DaemonTag* daemon;
    int fd;  // -1 once the reaper has shut it down
    std::chrono::steady_clock::time_point header_deadline;
    bool awaiting_headers = true;  // no request begun since the deadline was set
    bool served = false;           // a request has begun on it
  };
  std::map<void*, Connection> connections_ GUARDED_BY(mu_);
  CondVar reaper_wake_;
  bool reaper_stop_ GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

}  // namespace virtcap::http
