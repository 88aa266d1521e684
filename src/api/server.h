// The agent's HTTP/JSON API: its routes on the hardened HTTP server
// (src/http/server.h), on [api] listen (loopback by default). Every route,
// status and error code is in docs/api.md.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "api/instance_list.h"
#include "common/mutex.h"
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

// Prometheus-style counters kept by the API server.
class Metrics {
 public:
  void request(const std::string& method, const std::string& route, int status);
  // What the agent's own state says at scrape time.
  struct Snapshot {
    std::vector<compute::TaskStatus> tasks;
    compute::ComputeManager::ImageCacheTotals image_cache;
    bool hypervisor_connected = false;
    std::string driver;
    std::map<std::string, std::uint64_t> instances_by_vm_state;
  };
  std::string render(const Snapshot& s) const;

 private:
  mutable Mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_ GUARDED_BY(mu_);
};

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
  compute::ComputeManager& mgr_;
  compute::PeriodicTaskRunner& runner_;
  Metrics metrics_;
  // Capabilities are read once at start-up, so their body is rendered once.
  std::shared_ptr<const std::string> capabilities_body_;
  ListPageCache list_pages_;
  std::unique_ptr<http::Server> http_;
};

}  // namespace virtcap::api
