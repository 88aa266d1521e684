// The agent's HTTP/JSON API: its routes on the hardened HTTP server
// (src/http/server.h), on [api] listen (loopback by default). Every route,
// status and error code is in docs/api.md.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "api/instance_list.h"
#include "api/metrics.h"
#include "compute/manager.h"
#include "compute/periodic.h"
#include "config/config.h"
#include "http/server.h"

namespace virtcap::api {

inline constexpr std::size_t kMaxBodyBytes = 1024 * 1024;

// Keeps response-sized buffers (hundreds of KiB) on the heap instead of a
// fresh mmap per request, whose page faults cost more than building the
// response. Process-wide; `virtcap agent` calls it at start.
void tune_allocator();

// The HTTP server options of [api]: listen, token, TLS, allow_insecure,
// origins, hosts, threads (routes and metrics are the Server's).
http::Options http_options(const config::Config& cfg);

class Server {
 public:
  // listen_fd: a socket http::listen_socket() bound to [api] listen before
  // the manager existed (`virtcap agent`), which the server then owns; -1:
  // bind() binds [api] listen itself.
  Server(const config::Config& cfg, compute::ComputeManager& mgr, compute::PeriodicTaskRunner& runner,
         int listen_fd = -1);
  ~Server();

  // Refuses what http::check_listen and http::load_tls refuse
  // (invalid_argument), binds, and returns the bound port. Then start().
  Result<int> bind();
  const char* scheme() const { return http_->scheme(); }
  // Serves on threads of its own; returns once the server is accepting.
  Status start();
  // Stops accepting, lets in-flight requests finish, joins. Idempotent.
  void stop();
  // SIGHUP: the TLS certificate and key files read again (http::Server::reload_tls).
  Status reload_tls() { return http_->reload_tls(); }

 private:
  std::vector<http::Route> routes();
  // The routes' handlers, in the table's order (docs/api.md).
  http::Response get_health(const http::Request& req);
  http::Response get_metrics(const http::Request& req);
  http::Response get_capabilities(const http::Request& req);
  http::Response list_instances(const http::Request& req);
  http::Response boot(const http::Request& req);
  http::Response show(const http::Request& req);
  http::Response destroy(const http::Request& req);
  http::Response reboot(const http::Request& req);
  http::Response attach_interface(const http::Request& req);
  http::Response detach_interface(const http::Request& req);
  http::Response image_cache_pass(const http::Request& req);
  http::Response list_images(const http::Request& req);
  http::Response list_tasks(const http::Request& req);
  http::Response get_reconcile(const http::Request& req);
  compute::ComputeManager& mgr_;
  compute::PeriodicTaskRunner& runner_;
  Metrics metrics_;
  // Capabilities are read once at start-up, so their body is rendered once.
  std::shared_ptr<const std::string> capabilities_body_;
  ListPageCache list_pages_;
  std::unique_ptr<http::Server> http_;
};

}  // namespace virtcap::api
