#include "api/server.h"

#include "virtcap/version.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "api/instance_list.h"
#include "api/json.h"
#include "capabilities/render.h"
#include "http/server.h"
#include "imagecache/pass.h"

namespace virtcap::api {

namespace {

using nlohmann::json;
using http::BodyRule;
using http::Request;
using http::Response;

Response send_error(const Error& e) { return http::json_response(http_status(e.code), error_json(e)); }

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
  MutexLock lock(mu_);
  ++requests_[{method, route, status}];
}

std::string Metrics::render(const Snapshot& snap) const {
  std::ostringstream os;
  {
    MutexLock lock(mu_);
    os << "# HELP virtcap_api_requests_total API requests by method, route and status.\n"
          "# TYPE virtcap_api_requests_total counter\n";
    for (const auto& [k, n] : requests_)
      os << "virtcap_api_requests_total{method=\"" << std::get<0>(k) << "\",route=\"" << escape_label(std::get<1>(k))
         << "\",status=\"" << std::get<2>(k) << "\"} " << n << "\n";
  }
  os << "# HELP virtcap_build_info The running virtcap: version and driver (always 1).\n"
        "# TYPE virtcap_build_info gauge\n"
     << "virtcap_build_info{version=\"" << escape_label(VIRTCAP_VERSION) << "\",driver=\"" << escape_label(snap.driver)
     << "\"} 1\n"
     << "# HELP virtcap_hypervisor_connected Whether the driver's hypervisor connection is up (1) or not (0).\n"
        "# TYPE virtcap_hypervisor_connected gauge\n"
     << "virtcap_hypervisor_connected " << (snap.hypervisor_connected ? 1 : 0) << "\n"
     << "# HELP virtcap_instances Live instances of this host by vm_state.\n"
        "# TYPE virtcap_instances gauge\n";
  for (const auto& [state, n] : snap.instances_by_vm_state)
    os << "virtcap_instances{vm_state=\"" << escape_label(state) << "\"} " << n << "\n";
  os << "# HELP virtcap_task_runs_total Completed runs of each periodic task, by result.\n"
        "# TYPE virtcap_task_runs_total counter\n";
  for (const auto& t : snap.tasks)
    for (auto kind : {compute::TaskOutcome::Kind::ran, compute::TaskOutcome::Kind::skipped,
                      compute::TaskOutcome::Kind::failed})
      os << "virtcap_task_runs_total{task=\"" << t.name << "\",result=\"" << compute::to_string(kind) << "\"} "
         << t.runs_by_result[static_cast<int>(kind)] << "\n";
  os << "# HELP virtcap_task_last_duration_seconds Duration of each periodic task's last run.\n"
        "# TYPE virtcap_task_last_duration_seconds gauge\n";
  for (const auto& t : snap.tasks)
    os << "virtcap_task_last_duration_seconds{task=\"" << t.name << "\"} " << t.last_duration.count() << "\n";
  os << "# HELP virtcap_task_enabled Whether each periodic task is scheduled.\n"
        "# TYPE virtcap_task_enabled gauge\n";
  for (const auto& t : snap.tasks)
    os << "virtcap_task_enabled{task=\"" << t.name << "\"} " << (t.enabled ? 1 : 0) << "\n";
  const auto& ic = snap.image_cache;
  os << "# HELP virtcap_image_cache_passes_total Image-cache passes run (periodic, API and CLI alike).\n"
        "# TYPE virtcap_image_cache_passes_total counter\n"
     << "virtcap_image_cache_passes_total " << ic.passes << "\n"
     << "# HELP virtcap_image_cache_incomplete_passes_total Passes that removed nothing because something could not be read.\n"
        "# TYPE virtcap_image_cache_incomplete_passes_total counter\n"
     << "virtcap_image_cache_incomplete_passes_total " << ic.incomplete << "\n"
     << "# HELP virtcap_image_cache_files_removed_total Base files removed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_files_removed_total counter\n"
     << "virtcap_image_cache_files_removed_total " << ic.files_removed << "\n"
     << "# HELP virtcap_image_cache_bytes_freed_total Bytes freed by image-cache passes.\n"
        "# TYPE virtcap_image_cache_bytes_freed_total counter\n"
     << "virtcap_image_cache_bytes_freed_total " << ic.bytes_freed << "\n";
  return os.str();
}

http::Options http_options(const config::Config& cfg) {
  http::Options o;
  o.listen = cfg.api.listen;
  o.token = cfg.api.token;
  o.tls_cert = cfg.api.tls_cert;
  o.tls_key = cfg.api.tls_key;
  o.tls_priority = cfg.api.tls_priority;
  o.max_connections_per_address = static_cast<unsigned>(cfg.api.max_connections_per_address);
  o.max_connections = static_cast<unsigned>(cfg.api.max_connections);
  o.request_header_timeout_seconds = static_cast<unsigned>(cfg.api.request_header_timeout);
  o.allow_insecure = cfg.api.allow_insecure;
  o.allowed_origins = http::split_list(cfg.api.allowed_origins);
  o.allowed_hosts = http::split_list(cfg.api.allowed_hosts);
  o.max_body_bytes = kMaxBodyBytes;
  o.threads = static_cast<unsigned>(cfg.api.threads);
  o.config_section = "[api]";
  return o;
}

Server::Server(const config::Config& cfg, compute::ComputeManager& mgr, compute::PeriodicTaskRunner& runner,
               int listen_fd)
    : mgr_(mgr),
      runner_(runner),
      capabilities_body_(std::make_shared<const std::string>(
          http::json_response(200, caps::to_json(mgr_.driver_name(), mgr_.capabilities())).body)) {
  http::Options o = http_options(cfg);
  o.listen_fd = listen_fd;
  o.on_response = [this](const Request& req, const std::string& route, int status) {
    metrics_.request(req.method, route, status);
    spdlog::debug("api {} {} -> {}", req.method, route, status);
  };
  http_ = std::make_unique<http::Server>(std::move(o), routes());
}

Server::~Server() { stop(); }

Result<int> Server::bind() { return http_->bind(); }

Status Server::start() { return http_->start(); }

void Server::stop() { http_->stop(); }

std::vector<http::Route> Server::routes() {
  auto ok = [](const json& body) { return http::json_response(200, body); };
  return {
      {"GET", "/healthz", BodyRule::none,
       [this](const Request&) {
         const auto why = mgr_.driver().unavailable_reason();
         return http::json_response(why.empty() ? 200 : 503,
                                    json{{"status", why.empty() ? "ok" : "degraded"},
                                         {"driver", std::string(mgr_.driver_name())},
                                         {"hypervisor", why.empty() ? json("up") : json(why)}});
       }},
      {"GET", "/metrics", BodyRule::none,
       [this](const Request&) {
         Metrics::Snapshot snap;
         snap.tasks = runner_.status();
         snap.image_cache = mgr_.image_cache_totals();
         snap.hypervisor_connected = mgr_.driver().unavailable_reason().empty();
         snap.driver = std::string(mgr_.driver_name());
         if (auto list = mgr_.list(); list.ok())
           for (const auto& i : list.value()) ++snap.instances_by_vm_state[std::string(to_string(i.vm_state))];
         return Response{200, "text/plain; version=0.0.4", metrics_.render(snap), {}, nullptr};
       }},
      {"GET", "/v1/capabilities", BodyRule::none,
       [this](const Request&) { return Response{200, "application/json", {}, {}, capabilities_body_}; }},
      {"GET", "/v1/instances", BodyRule::none,
       [this](const Request& req) {
         // filters, sort, paging, reuse of unchanged pages: api/instance_list.h
         auto body = list_instances_body(mgr_, req.query, &list_pages_);
         if (!body.ok()) return send_error(body.error());
         return Response{200, "application/json", {}, {}, std::move(body.value())};
       }},
      {"POST", "/v1/instances", BodyRule::json,
       [this](const Request& req) {
         auto boot = parse_boot_request(req.body);
         if (!boot.ok()) return send_error(boot.error());
         auto rec = mgr_.boot(boot->name, boot->image, boot->memory_mb, boot->vcpus);
         if (!rec.ok()) return send_error(rec.error());
         auto res = http::json_response(201, to_json(rec.value()));
         res.headers.emplace_back("Location", "/v1/instances/" + rec->uuid);
         return res;
       }},
      {"GET", "/v1/instances/{id}", BodyRule::none,
       [this, ok](const Request& req) {
         auto v = mgr_.show(req.param("id"));
         if (!v.ok()) return send_error(v.error());
         return ok(to_json(v.value()));
       }},
      {"DELETE", "/v1/instances/{id}", BodyRule::none,
       [this, ok](const Request& req) {
         auto st = mgr_.destroy(req.param("id"));
         if (!st.ok()) return send_error(st.error());
         return ok(json{{"deleted", req.param("id")}});
       }},
      {"POST", "/v1/instances/{id}/reboot", BodyRule::json,
       [this, ok](const Request& req) {
         if (auto body = parse_empty_request(req.body); !body.ok()) return send_error(body.error());
         auto st = mgr_.reboot(req.param("id"));
         if (!st.ok()) return send_error(st.error());
         return ok(json{{"rebooted", req.param("id")}});
       }},
      {"POST", "/v1/instances/{id}/interfaces", BodyRule::json,
       [this](const Request& req) {
         auto spec = parse_interface_request(req.body);
         if (!spec.ok()) return send_error(spec.error());
         auto nic = mgr_.attach_interface(req.param("id"), spec.value());
         if (!nic.ok()) return send_error(nic.error());
         return http::json_response(201, to_json(nic.value()));
       }},
      {"DELETE", "/v1/instances/{id}/interfaces/{mac}", BodyRule::none,
       [this, ok](const Request& req) {
         auto st = mgr_.detach_interface(req.param("id"), req.param("mac"));
         if (!st.ok()) return send_error(st.error());
         return ok(json{{"detached", req.param("mac")}});
       }},
      {"POST", "/v1/image-cache/pass", BodyRule::json,
       [this, ok](const Request& req) {
         auto dry = parse_pass_request(req.body);
         if (!dry.ok()) return send_error(dry.error());
         auto r = mgr_.image_cache_pass(dry->dry_run);
         if (!r.ok()) return send_error(r.error());
         return ok(imagecache::to_json(r.value()));
       }},
      {"GET", "/v1/images", BodyRule::none,
       [this, ok](const Request&) {
         auto images = mgr_.driver().list_images();
         if (!images.ok()) return send_error(images.error());
         return ok(to_json(images.value()));
       }},
      {"GET", "/v1/tasks", BodyRule::none,
       [this, ok](const Request&) {
         json arr = json::array();
         for (const auto& t : runner_.status()) arr.push_back(to_json(t));
         return ok(json{{"tasks", arr}});
       }},
      {"GET", "/v1/reconcile", BodyRule::none,
       [this, ok](const Request&) {
         auto r = mgr_.reconcile(false);
         if (!r.ok()) return send_error(r.error());
         return ok(to_json(r.value()));
       }},
  };
}

}  // namespace virtcap::api
