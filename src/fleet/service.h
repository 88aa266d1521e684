// `virtcap fleet serve`: the fleet core (src/fleet/fleet.h) behind the
// hardened HTTP server (src/http/server.h), with the agent API's conventions
// (error bodies, token, Host/Origin rules, body limit). Routes, bodies and
// statuses are in docs/fleet.md ("API").
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "common/mutex.h"
#include "fleet/authenticator.h"
#include "fleet/fleet.h"
#include "fleet/rate_limit.h"
#include "http/server.h"

namespace virtcap::config {
struct Config;
}
namespace virtcap::audit {
class Scope;
}

namespace virtcap::fleet {

inline constexpr std::size_t kMaxReportBodyBytes = 256 * 1024;

struct ServiceOptions {
  FleetOptions fleet;
  http::Options http;
  // Seconds between recounts of the database against the index (drift is
  // logged, and the hosts concerned re-read into the index); 0 disables.
  std::chrono::seconds drift_check_interval{0};
  // [fleet_service] max_traits_per_host: a report with more is refused whole.
  std::size_t max_traits_per_host = 512;
  // [fleet_service] host_reports_per_minute: reports one host may send a
  // minute (in bursts of as many) before 429; 0: no limit.
  unsigned host_reports_per_minute = 12;
  // Who may do what (docs/fleet.md, "Trust model").
  AuthOptions auth;
  // How often the credentials version is polled (a revocation takes effect
  // within this).
  std::chrono::milliseconds credentials_poll{1000};
};

// The options [fleet_service] gives (database default: sqlite://<state_path>/fleet.sqlite).
ServiceOptions service_options(const config::Config& cfg);

class FleetService {
 public:
  static Result<std::unique_ptr<FleetService>> open(ServiceOptions options);
  ~FleetService();
  FleetService(const FleetService&) = delete;
  FleetService& operator=(const FleetService&) = delete;

  // check_listen, bind; the bound port. Then start().
  Result<int> bind() { return http_->bind(); }
  const char* scheme() const { return http_->scheme(); }
  Status start();
  void stop();
  // SIGHUP: the TLS certificate and key files read again (http::Server::reload_tls).
  Status reload_tls() { return http_->reload_tls(); }

  Fleet& fleet() { return *fleet_; }

 private:
  explicit FleetService(ServiceOptions options)
      : options_(std::move(options)), report_limit_(options_.host_reports_per_minute) {}
  std::vector<http::Route> routes();
  // A write: refused (403) unless the principal may do `action` on the
  // host, and audited either way.
  using WriteHandler = http::Response (FleetService::*)(const http::Request&, audit::Scope&);
  std::function<http::Response(const http::Request&)> write(const char* operation, Action action,
                                                            WriteHandler handler);
  nlohmann::json host_json(const HostRecord& h) const;
  // The routes' handlers, in the table's order (docs/fleet.md, "API").
  http::Response get_health(const http::Request& req);
  http::Response get_live(const http::Request& req);
  http::Response get_metrics(const http::Request& req);
  http::Response query_hosts(const http::Request& req);
  http::Response get_host(const http::Request& req);
  http::Response put_host(const http::Request& req, audit::Scope& audit);
  http::Response delete_host(const http::Request& req, audit::Scope& audit);
  http::Response add_trait(const http::Request& req, audit::Scope& audit);
  http::Response remove_trait(const http::Request& req, audit::Scope& audit);
  http::Response trait_write(const http::Request& req, bool add);
  void drift_loop();
  void credentials_loop();
  // Runs every request through the authenticator: a 401 when it has no
  // principal, else the principal in req.auth.
  std::optional<http::Response> authenticate(http::Request& req) const;

  ServiceOptions options_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<http::Server> http_;
  HostRateLimit report_limit_;
  std::atomic<std::uint64_t> reports_refused_{0};  // 429s for host_reports_per_minute
  Mutex mu_;
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread drift_thread_;
  std::thread credentials_thread_;
};

}  // namespace virtcap::fleet
