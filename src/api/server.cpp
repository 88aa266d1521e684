#include "api/server.h"

#include <httplib.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <regex>
#include <sstream>

#include "api/json.h"
#include "capabilities/render.h"
#include "imagecache/pass.h"

namespace virtcap::api {

namespace {

using nlohmann::json;

struct Route {
  std::string name;  // the template, e.g. /v1/instances/{id}; the metrics label
  std::vector<std::string> methods;
};

const std::vector<Route>& route_table() {
  static const std::vector<Route> kRoutes = {
      {"/healthz", {"GET"}},
      {"/metrics", {"GET"}},
      {"/v1/capabilities", {"GET"}},
      {"/v1/instances", {"GET", "POST"}},
      {"/v1/instances/{id}", {"GET", "DELETE"}},
      {"/v1/instances/{id}/reboot", {"POST"}},
      {"/v1/instances/{id}/interfaces", {"POST"}},
      {"/v1/instances/{id}/interfaces/{mac}", {"DELETE"}},
      {"/v1/image-cache/pass", {"POST"}},
      {"/v1/tasks", {"GET"}},
      {"/v1/reconcile", {"GET"}},
  };
  return kRoutes;
}

// Segment-wise match; "{x}" matches one non-empty segment. (No std::regex on
// the per-request path: it costs more than the handlers.)
bool matches(std::string_view tmpl, std::string_view path) {
  while (!tmpl.empty() || !path.empty()) {
    if (tmpl.empty() || path.empty() || tmpl[0] != '/' || path[0] != '/') return false;
    tmpl.remove_prefix(1);
    path.remove_prefix(1);
    const auto te = tmpl.find('/'), pe = path.find('/');
    const auto tseg = tmpl.substr(0, te), pseg = path.substr(0, pe);
    if (tseg.starts_with('{') ? pseg.empty() : tseg != pseg) return false;
    tmpl.remove_prefix(tseg.size());
    path.remove_prefix(pseg.size());
  }
  return true;
}

const Route* match_route(const std::string& path) {
  for (const auto& r : route_table())
    if (matches(r.name, path)) return &r;
  return nullptr;
}

void send(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void send_error(httplib::Response& res, const Error& e) { send(res, http_status(e.code), error_json(e)); }

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  send(res, status, json{{"error", {{"code", code}, {"message", message}}}});
}

Error bad_request(const std::string& message) { return make_error(Errc::invalid_argument, message); }

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string escape_label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void tune_allocator() {
  ::mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

void Metrics::request(const std::string& method, const std::string& route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{method, route, status}];
}

void Metrics::image_cache_pass(const ImageCacheReport& r) {
  std::lock_guard lock(mu_);
  ++passes_;
  files_removed_ += r.files_removed;
  bytes_freed_ += r.bytes_freed;
}

std::string Metrics::render(const std::vector<compute::TaskStatus>& tasks) const {
  std::ostringstream os;
  std::lock_guard lock(mu_);
  os << "# HELP virtcap_api_requests_total API requests by method, route and status.\n"
        "# TYPE virtcap_api_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    os << "virtcap_api_requests_total{method=\"" << std::get<0>(k) << "\",route=\"" << escape_label(std::get<1>(k))
       << "\",status=\"" << std::get<2>(k) << "\"} " << n << "\n";
  os << "# HELP virtcap_task_runs_total Completed runs of each periodic task.\n"
        "# TYPE virtcap_task_runs_total counter\n";
  for (const auto& t : tasks) os << "virtcap_task_runs_total{task=\"" << t.name << "\"} " << t.runs << "\n";
  os << "# HELP virtcap_task_last_duration_seconds Duration of each periodic task's last run.\n"
        "# TYPE virtcap_task_last_duration_seconds gauge\n";
  for (const auto& t : tasks)
    os << "virtcap_task_last_duration_seconds{task=\"" << t.name << "\"} " << t.last_duration.count() << "\n";
  os << "# HELP virtcap_task_enabled Whether each periodic task is scheduled.\n"
        "# TYPE virtcap_task_enabled gauge\n";
  for (const auto& t : tasks) os << "virtcap_task_enabled{task=\"" << t.name << "\"} " << (t.enabled ? 1 : 0) << "\n";
  os << "# HELP virtcap_image_cache_passes_total Image-cache passes run through the API.\n"
        "# TYPE virtcap_image_cache_passes_total counter\n"
     << "virtcap_image_cache_passes_total " << passes_ << "\n"
     << "# HELP virtcap_image_cache_files_removed_total Base files removed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_files_removed_total counter\n"
     << "virtcap_image_cache_files_removed_total " << files_removed_ << "\n"
     << "# HELP virtcap_image_cache_bytes_freed_total Bytes freed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_bytes_freed_total counter\n"
     << "virtcap_image_cache_bytes_freed_total " << bytes_freed_ << "\n";
  return os.str();
}

Server::Server(const config::Config& cfg, compute::ComputeManager& mgr, compute::PeriodicTaskRunner& runner)
    : cfg_(cfg), mgr_(mgr), runner_(runner), http_(std::make_unique<httplib::Server>()) {
  const int threads = cfg.api.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  http_->set_payload_max_length(kMaxBodyBytes);
  http_->set_tcp_nodelay(true);  // small JSON answers must not wait for delayed ACKs
  // httplib's default also sets SO_REUSEPORT, which lets a second agent bind
  // the same port and silently share its requests. Only SO_REUSEADDR here: a
  // port in use is an error at start.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http_->set_read_timeout(10, 0);
  http_->set_write_timeout(10, 0);
  routes();
}

Server::~Server() { stop(); }

Result<int> Server::bind() {
  auto hp = config::split_listen(cfg_.api.listen);
  if (!hp) return bad_request("[api] listen '" + cfg_.api.listen + "' is not HOST:PORT");
  if (!config::is_loopback(hp->first) && cfg_.api.token.empty())
    return bad_request("refusing to listen on " + cfg_.api.listen +
                       ": it is not a loopback address and [api] token is not set; set a token, or listen on "
                       "127.0.0.1");
  int port = hp->second;
  if (port == 0) {
    port = http_->bind_to_any_port(hp->first);
    if (port < 0) port = 0;
  } else if (!http_->bind_to_port(hp->first, port)) {
    port = 0;
  }
  if (port <= 0)
    return make_error(Errc::io_error, "cannot listen on " + cfg_.api.listen +
                                          ": the address is in use or not available on this host");
  return port;
}

void Server::start() {
  thread_ = std::thread([this] {
    http_->listen_after_bind();
    serve_returned_ = true;
  });
  // httplib marks itself running inside listen_after_bind; a stop() before
  // that would be lost, so wait for it (microseconds).
  while (!http_->is_running() && !serve_returned_.load()) std::this_thread::yield();
}

void Server::stop() {
  if (!thread_.joinable()) return;
  http_->stop();
  thread_.join();
}

void Server::routes() {
  auto& s = *http_;

  // Authentication and the body limit come before routing.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!cfg_.api.token.empty() &&
        !constant_time_equal(req.get_header_value("Authorization"), "Bearer " + cfg_.api.token)) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 404: send_error(res, 404, "not_found", "no route " + req.method + " " + req.path); break;
      case 413:
        send_error(res, 413, "payload_too_large",
                   "request body exceeds " + std::to_string(kMaxBodyBytes) + " bytes");
        break;
      case 400: send_error(res, 400, "invalid_argument", "malformed HTTP request"); break;
      default: send_error(res, res.status, "error", "HTTP " + std::to_string(res.status)); break;
    }
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("API handler failed: {}", what);
    send_error(res, 500, "internal", "internal error: " + what);
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const Route* r = match_route(req.path);
    metrics_.request(req.method, r ? r->name : "unmatched", res.status);
    spdlog::debug("api {} {} -> {}", req.method, req.path, res.status);
  });

  s.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    const auto why = mgr_.driver().unavailable_reason();
    send(res, why.empty() ? 200 : 503,
         json{{"status", why.empty() ? "ok" : "degraded"},
              {"driver", std::string(mgr_.driver_name())},
              {"hypervisor", why.empty() ? json("up") : json(why)}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(runner_.status()), "text/plain; version=0.0.4");
  });
  s.Get("/v1/capabilities", [this](const httplib::Request&, httplib::Response& res) {
    send(res, 200, caps::to_json(mgr_.driver_name(), mgr_.capabilities()));
  });
  s.Get("/v1/instances", [this](const httplib::Request&, httplib::Response& res) {
    auto list = mgr_.list();
    if (!list) return send_error(res, list.error());
    res.status = 200;
    std::string body = instances_json(list.value());
    body += '\n';
    res.body = std::move(body);  // httplib 0.11 has no set_content(string&&): avoid a 200 KB copy
    res.set_header("Content-Type", "application/json");
  });
  s.Post("/v1/instances", [this](const httplib::Request& req, httplib::Response& res) {
    auto boot = parse_boot_request(req.body);
    if (!boot) return send_error(res, boot.error());
    auto rec = mgr_.boot(boot->name, boot->image, boot->memory_mb, boot->vcpus);
    if (!rec) return send_error(res, rec.error());
    res.set_header("Location", "/v1/instances/" + rec->uuid);
    send(res, 201, to_json(rec.value()));
  });
  s.Get(R"(/v1/instances/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto v = mgr_.show(req.matches[1]);
    if (!v) return send_error(res, v.error());
    send(res, 200, to_json(v.value()));
  });
  s.Delete(R"(/v1/instances/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto st = mgr_.destroy(req.matches[1]);
    if (!st) return send_error(res, st.error());
    send(res, 200, json{{"deleted", std::string(req.matches[1])}});
  });
  s.Post(R"(/v1/instances/([^/]+)/reboot)", [this](const httplib::Request& req, httplib::Response& res) {
    if (auto body = parse_empty_request(req.body); !body) return send_error(res, body.error());
    auto st = mgr_.reboot(req.matches[1]);
    if (!st) return send_error(res, st.error());
    send(res, 200, json{{"rebooted", std::string(req.matches[1])}});
  });
  s.Post(R"(/v1/instances/([^/]+)/interfaces)", [this](const httplib::Request& req, httplib::Response& res) {
    auto spec = parse_interface_request(req.body);
    if (!spec) return send_error(res, spec.error());
    auto nic = mgr_.attach_interface(req.matches[1], spec.value());
    if (!nic) return send_error(res, nic.error());
    send(res, 201, to_json(nic.value()));
  });
  s.Delete(R"(/v1/instances/([^/]+)/interfaces/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto st = mgr_.detach_interface(req.matches[1], req.matches[2]);
    if (!st) return send_error(res, st.error());
    send(res, 200, json{{"detached", std::string(req.matches[2])}});
  });
  s.Post("/v1/image-cache/pass", [this](const httplib::Request& req, httplib::Response& res) {
    auto dry = parse_pass_request(req.body);
    if (!dry) return send_error(res, dry.error());
    auto r = mgr_.image_cache_pass(dry.value());
    if (!r) return send_error(res, r.error());
    metrics_.image_cache_pass(r.value());
    send(res, 200, imagecache::to_json(r.value()));
  });
  s.Get("/v1/tasks", [this](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    for (const auto& t : runner_.status()) arr.push_back(to_json(t));
    send(res, 200, json{{"tasks", arr}});
  });
  s.Get("/v1/reconcile", [this](const httplib::Request&, httplib::Response& res) {
    auto r = mgr_.reconcile(false);
    if (!r) return send_error(res, r.error());
    send(res, 200, to_json(r.value()));
  });

  // Known paths with the wrong method: 405 with Allow; anything else: 404.
  auto fallback = [](const httplib::Request& req, httplib::Response& res) {
    const Route* r = match_route(req.path);
    if (!r) return send_error(res, 404, "not_found", "no route " + req.method + " " + req.path);
    std::string allow;
    for (const auto& m : r->methods) allow += (allow.empty() ? "" : ", ") + m;
    res.set_header("Allow", allow);
    send_error(res, 405, "method_not_allowed", req.method + " is not allowed on " + r->name + "; allowed: " + allow);
  };
  s.Get(".*", fallback);
  s.Post(".*", fallback);
  s.Put(".*", fallback);
  s.Patch(".*", fallback);
  s.Delete(".*", fallback);
  s.Options(".*", fallback);
}

}  // namespace virtcap::api
