#include "api/server.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include "api/instance_list.h"
#include "api/json.h"
#include "capabilities/render.h"
#include "http/errors.h"
#include "http/server.h"
#include "imagecache/pass.h"

namespace virtcap::api {

namespace {

using http::BodyRule;
using http::Request;
using http::Response;
using http::send_error;
using nlohmann::json;

Response ok(const json& body) { return http::json_response(200, body); }

}  // namespace

void tune_allocator() {
  ::mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
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
  auto to = [this](Response (Server::*handler)(const Request&)) {
    return [this, handler](const Request& req) { return (this->*handler)(req); };
  };
  return {
      {"GET", "/healthz", BodyRule::none, to(&Server::get_health)},
      {"GET", "/metrics", BodyRule::none, to(&Server::get_metrics)},
      {"GET", "/v1/capabilities", BodyRule::none, to(&Server::get_capabilities)},
      {"GET", "/v1/instances", BodyRule::none, to(&Server::list_instances)},
      {"POST", "/v1/instances", BodyRule::json, to(&Server::boot)},
      {"GET", "/v1/instances/{id}", BodyRule::none, to(&Server::show)},
      {"DELETE", "/v1/instances/{id}", BodyRule::none, to(&Server::destroy)},
      {"POST", "/v1/instances/{id}/reboot", BodyRule::json, to(&Server::reboot)},
      {"POST", "/v1/instances/{id}/interfaces", BodyRule::json, to(&Server::attach_interface)},
      {"DELETE", "/v1/instances/{id}/interfaces/{mac}", BodyRule::none, to(&Server::detach_interface)},
      {"POST", "/v1/image-cache/pass", BodyRule::json, to(&Server::image_cache_pass)},
      {"GET", "/v1/images", BodyRule::none, to(&Server::list_images)},
      {"GET", "/v1/tasks", BodyRule::none, to(&Server::list_tasks)},
      {"GET", "/v1/reconcile", BodyRule::none, to(&Server::get_reconcile)},
  };
}

Response Server::get_health(const Request&) {
  const auto why = mgr_.driver().unavailable_reason();
  return http::json_response(why.empty() ? 200 : 503,
                             json{{"status", why.empty() ? "ok" : "degraded"},
                                  {"driver", std::string(mgr_.driver_name())},
                                  {"hypervisor", why.empty() ? json("up") : json(why)}});
}

Response Server::get_metrics(const Request&) {
  Metrics::Snapshot snap;
  snap.tasks = runner_.status();
  snap.image_cache = mgr_.image_cache_totals();
  snap.hypervisor_connected = mgr_.driver().unavailable_reason().empty();
  snap.driver = std::string(mgr_.driver_name());
  if (auto list = mgr_.list(); list.ok())
    for (const auto& i : list.value()) ++snap.instances_by_vm_state[std::string(to_string(i.vm_state))];
  return Response{200, "text/plain; version=0.0.4", metrics_.render(snap), {}, nullptr};
}

Response Server::get_capabilities(const Request&) {
  return Response{200, "application/json", {}, {}, capabilities_body_};
}

Response Server::list_instances(const Request& req) {
  // filters, sort, paging, reuse of unchanged pages: api/instance_list.h
  auto body = list_instances_body(mgr_, req.query, &list_pages_);
  if (!body.ok()) return send_error(body.error());
  return Response{200, "application/json", {}, {}, std::move(body.value())};
}

Response Server::boot(const Request& req) {
  auto boot = parse_boot_request(req.body);
  if (!boot.ok()) return send_error(boot.error());
  auto rec = mgr_.boot(boot->name, boot->image, boot->memory_mb, boot->vcpus);
  if (!rec.ok()) return send_error(rec.error());
  auto res = http::json_response(201, to_json(rec.value()));
  res.headers.emplace_back("Location", "/v1/instances/" + rec->uuid);
  return res;
}

Response Server::show(const Request& req) {
  auto v = mgr_.show(req.param("id"));
  if (!v.ok()) return send_error(v.error());
  return ok(to_json(v.value()));
}

Response Server::destroy(const Request& req) {
  auto st = mgr_.destroy(req.param("id"));
  if (!st.ok()) return send_error(st.error());
  return ok(json{{"deleted", req.param("id")}});
}

Response Server::reboot(const Request& req) {
  if (auto body = parse_empty_request(req.body); !body.ok()) return send_error(body.error());
  auto st = mgr_.reboot(req.param("id"));
  if (!st.ok()) return send_error(st.error());
  return ok(json{{"rebooted", req.param("id")}});
}

Response Server::attach_interface(const Request& req) {
  auto spec = parse_interface_request(req.body);
  if (!spec.ok()) return send_error(spec.error());
  auto nic = mgr_.attach_interface(req.param("id"), spec.value());
  if (!nic.ok()) return send_error(nic.error());
  return http::json_response(201, to_json(nic.value()));
}

Response Server::detach_interface(const Request& req) {
  auto st = mgr_.detach_interface(req.param("id"), req.param("mac"));
  if (!st.ok()) return send_error(st.error());
  return ok(json{{"detached", req.param("mac")}});
}

Response Server::image_cache_pass(const Request& req) {
  auto dry = parse_pass_request(req.body);
  if (!dry.ok()) return send_error(dry.error());
  auto r = mgr_.image_cache_pass(dry->dry_run);
  if (!r.ok()) return send_error(r.error());
  return ok(imagecache::to_json(r.value()));
}

Response Server::list_images(const Request&) {
  auto images = mgr_.driver().list_images();
  if (!images.ok()) return send_error(images.error());
  return ok(to_json(images.value()));
}

Response Server::list_tasks(const Request&) {
  json arr = json::array();
  for (const auto& t : runner_.status()) arr.push_back(to_json(t));
  return ok(json{{"tasks", arr}});
}

Response Server::get_reconcile(const Request&) {
  auto r = mgr_.reconcile(false);
  if (!r.ok()) return send_error(r.error());
  return ok(to_json(r.value()));
}

}  // namespace virtcap::api
