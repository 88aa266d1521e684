#include "fleet/service.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "common/audit.h"
#include "config/config.h"
#include "fleet/metrics.h"
#include "fleet/wire.h"
#include "http/errors.h"

namespace virtcap::fleet {

namespace {

using http::BodyRule;
using http::Request;
using http::Response;
using nlohmann::json;

// store_unavailable (the database cannot be reached: 503) also says when to
// retry: the longest reconnect back-off step, rounded up to seconds.
constexpr std::chrono::seconds kRetryAfter = std::chrono::ceil<std::chrono::seconds>(DbHealth::kReconnectMax);

Response send_error(const Error& e) { return http::send_error(e, kRetryAfter); }

// 429 for a host over [fleet_service] host_reports_per_minute, with
// Retry-After: when its bucket holds a report again (whole seconds, at least 1).
Response too_many_reports(std::string_view host, unsigned per_minute, std::chrono::milliseconds retry_after) {
  const auto secs = std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(retry_after).count());
  Response r = http::error_response(
      429, "rate_limited",
      "host " + quote_for_error(host) + " sent more than " + std::to_string(per_minute) +
          " reports in a minute ([fleet_service] host_reports_per_minute); retry in " + std::to_string(secs) +
          " s. An agent reports once a [fleet] report_interval: a host sending more is misconfigured or not "
          "an agent");
  r.headers.emplace_back("Retry-After", std::to_string(secs));
  return r;
}

// What a read answered from the index says of its freshness: in the body and
// in the header X-Virtcap-Index-Age (seconds the index may be behind; 0 when
// it follows the database).
Response with_freshness(int status, json body, const Freshness& f) {
  body["index_current"] = f.current;
  body["index_age_s"] = seconds(f.age);
  if (f.database_down)
    body["database"] = {{"reachable", false},
                        {"unreachable_s", seconds(f.database_down_for)},
                        {"reason", f.database_down->reason}};
  Response r = http::json_response(status, body);
  char age[32];
  std::snprintf(age, sizeof age, "%.3f", seconds(f.age));
  r.headers.emplace_back("X-Virtcap-Index-Age", age);
  if (status == 503) r.headers.emplace_back("Retry-After", std::to_string(kRetryAfter.count()));
  return r;
}

// The query parameters without "explain", and whether explain was asked.
Result<std::pair<QueryParams, bool>> split_explain(const Request& req) {
  std::pair<QueryParams, bool> out{{}, false};
  for (const auto& [k, v] : req.query_list) {
    if (k != "explain") {
      out.first.emplace_back(k, v);
      continue;
    }
    if (v == "true" || v == "1" || v.empty())
      out.second = true;
    else if (v != "false" && v != "0")
      return make_error(Errc::invalid_argument, "explain=" + quote_for_error(v) + ": expected true or false");
  }
  return out;
}

Response with_etag(Response r, std::int64_t generation) {
  r.headers.emplace_back("ETag", "\"" + std::to_string(generation) + "\"");
  return r;
}

const Principal& principal(const Request& req) {
  static const Principal kNobody{"unauthenticated", Role::reader, ""};  // no hook ran: a reader at most
  const auto* p = std::any_cast<Principal>(&req.auth);
  return p ? *p : kNobody;
}

// The 403 when the request's principal may not do `action` on `host`.
std::optional<Response> refusal(const Request& req, Action action, std::string_view host) {
  if (auto e = authorize(principal(req), action, host)) return send_error(*e);
  return std::nullopt;
}

// One audit line per write: what, on which host, by which credential (its
// id, never its secret), and the outcome.
void audit_by(audit::Scope& scope, const Request& req) {
  const Principal& p = principal(req);
  scope.field("credential", p.id);
  scope.field("role", std::string(to_string(p.role)));
  scope.field("client", req.remote_addr);
}

}  // namespace

ServiceOptions service_options(const config::Config& cfg) {
  const auto& s = cfg.fleet_service;
  ServiceOptions o;
  o.fleet.database_url =
      s.database.empty() ? "sqlite://" + cfg.defaults.state_path + "/fleet.sqlite" : s.database;
  o.fleet.host_down_after = std::chrono::seconds(s.host_down_after);
  o.http.listen = s.listen;
  o.auth.legacy_token = s.token;  // checked by the Authenticator, not by the HTTP server's single-token rule
  switch (s.anonymous_role) {
    case config::AnonymousRole::none: break;
    case config::AnonymousRole::reader: o.auth.anonymous = Role::reader; break;
    case config::AnonymousRole::operator_: o.auth.anonymous = Role::operator_; break;
  }
  // Set ("" for none): the service's credentials stand in for the server's single-token rule.
  o.http.anonymous_access = o.auth.anonymous ? "[fleet_service] anonymous_role = \"" +
                                                   std::string(config::to_string(s.anonymous_role)) + "\""
                                             : "";
  o.http.tls_client_ca = s.client_ca;
  o.http.allowed_origins = http::split_list(s.allowed_origins);
  o.http.allowed_hosts = http::split_list(s.allowed_hosts);
  o.http.max_body_bytes = kMaxReportBodyBytes;
  o.http.tls_cert = s.tls_cert;
  o.http.tls_key = s.tls_key;
  o.http.tls_priority = s.tls_priority;
  o.http.max_connections_per_address = static_cast<unsigned>(s.max_connections_per_address);
  o.http.max_connections = static_cast<unsigned>(s.max_connections);
  o.http.request_header_timeout_seconds = static_cast<unsigned>(s.request_header_timeout);
  o.http.allow_insecure = s.allow_insecure;
  o.http.config_section = "[fleet_service]";
  o.drift_check_interval = std::chrono::seconds(s.drift_check_interval);
  o.max_traits_per_host = static_cast<std::size_t>(s.max_traits_per_host);
  o.host_reports_per_minute = static_cast<unsigned>(s.host_reports_per_minute);
  return o;
}

Result<std::unique_ptr<FleetService>> FleetService::open(ServiceOptions options) {
  std::unique_ptr<FleetService> s(new FleetService(std::move(options)));
  auto f = Fleet::open(s->options_.fleet);
  if (!f.ok()) return f.error();
  s->fleet_ = std::move(*f);
  s->auth_ = std::make_unique<Authenticator>(s->fleet_->store(), s->options_.auth);
  if (auto st = s->auth_->refresh(); !st.ok()) return st.error();
  const auto& a = s->options_.auth;
  if (!a.legacy_token.empty())
    spdlog::warn(
        "[fleet_service] token is set: whoever holds it acts as an operator for every host. Give each agent "
        "its own credential (`virtcap fleet token create --role agent --host NAME`), then remove it");
  if (a.anonymous)
    spdlog::warn("[fleet_service] anonymous_role = \"{}\": requests with no credential act as {}",
                 to_string(*a.anonymous), to_string(*a.anonymous));
  else if (s->auth_->credentials() == 0 && a.legacy_token.empty() && s->options_.http.tls_client_ca.empty())
    spdlog::warn(
        "no fleet credential exists yet and anonymous_role = \"none\": every request will be refused (401) "
        "until one is made with `virtcap fleet token create`");
  s->options_.http.authenticate = [svc = s.get()](Request& req) { return svc->authenticate(req); };
  if (!s->options_.http.on_response)
    s->options_.http.on_response = [](const Request& req, const std::string& route, int status) {
      spdlog::debug("fleet {} {} -> {}", req.method, route, status);
    };
  s->http_ = std::make_unique<http::Server>(s->options_.http, s->routes());
  return s;
}

FleetService::~FleetService() { stop(); }

std::optional<Response> FleetService::authenticate(Request& req) const {
  if (req.path == "/livez") {  // a liveness probe carries no credential and learns nothing
    req.auth = Principal{"anonymous", Role::reader, ""};
    return std::nullopt;
  }
  auto who = auth_->authenticate(req);
  if (who.index() == 0) {
    req.auth = std::get<0>(std::move(who));
    return std::nullopt;
  }
  auto r = http::error_response(401, "unauthorized", std::get<1>(who));
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

void FleetService::credentials_loop() {
  MutexLock lock(mu_);
  bool failing = false;
  while (!cv_.wait_for(mu_, options_.credentials_poll, [this] {
    mu_.assert_held();
    return stopping_;
  })) {
    lock.unlock();
    if (auto st = auth_->refresh(); !st.ok()) {
      if (!failing)
        spdlog::warn("fleet credentials not re-read (the ones held stay in force): {}", st.error().message);
      failing = true;
    } else if (failing) {
      spdlog::info("fleet credentials re-read again");
      failing = false;
    }
    lock.lock();
  }
}

Status FleetService::start() {
  if (auto st = http_->start(); !st.ok()) return st;
  if (options_.drift_check_interval.count() > 0) drift_thread_ = std::thread([this] { drift_loop(); });
  credentials_thread_ = std::thread([this] { credentials_loop(); });
  return {};
}

void FleetService::stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (drift_thread_.joinable()) drift_thread_.join();
  if (credentials_thread_.joinable()) credentials_thread_.join();
  if (http_) http_->stop();
}

void FleetService::drift_loop() {
  MutexLock lock(mu_);
  while (!cv_.wait_for(mu_, options_.drift_check_interval, [this] {
    mu_.assert_held();
    return stopping_;
  })) {
    lock.unlock();
    if (auto gone = fleet_->store().forget_unheld_traits(); !gone.ok())
      spdlog::warn("fleet: unheld trait names not removed (next pass tries again): {}", gone.error().message);
    else if (*gone > 0)
      spdlog::info("fleet: removed {} trait name(s) no host holds any more", *gone);
    auto d = fleet_->check_drift();  // logs any drift it finds
    if (!d.ok())
      spdlog::warn("fleet drift check failed: {}", d.error().message);
    else  // re-read just those hosts (a full rebuild would hold up every write meanwhile)
      for (const auto& h : d->hosts)
        if (auto st = fleet_->refresh_host(h); !st.ok())
          spdlog::warn("fleet index repair of {} failed: {}", h, st.error().message);
    lock.lock();
  }
}

std::vector<http::Route> FleetService::routes() {
  auto to = [this](Response (FleetService::*handler)(const Request&)) {
    return [this, handler](const Request& req) { return (this->*handler)(req); };
  };
  return {
      {"GET", "/healthz", BodyRule::none, to(&FleetService::get_health)},
      {"GET", "/livez", BodyRule::none, to(&FleetService::get_live)},
      {"GET", "/metrics", BodyRule::none, to(&FleetService::get_metrics)},
      {"GET", "/v1/hosts", BodyRule::none, to(&FleetService::query_hosts)},
      {"GET", "/v1/hosts/{name}", BodyRule::none, to(&FleetService::get_host)},
      {"PUT", "/v1/hosts/{name}", BodyRule::json,
       write("fleet_report", Action::report, &FleetService::put_host)},
      {"DELETE", "/v1/hosts/{name}", BodyRule::none,
       write("fleet_host_delete", Action::delete_host, &FleetService::delete_host)},
      {"PUT", "/v1/hosts/{name}/traits/{trait}", BodyRule::json,
       write("fleet_trait_add", Action::operator_traits, &FleetService::add_trait)},
      {"DELETE", "/v1/hosts/{name}/traits/{trait}", BodyRule::json,
       write("fleet_trait_remove", Action::operator_traits, &FleetService::remove_trait)},
  };
}

// A write: the role's rule first (403), then the handler; one audit line
// either way, naming the credential (a report that changed nothing, the
// agents' heartbeat, logs none).
std::function<Response(const Request&)> FleetService::write(const char* operation, Action action,
                                                            WriteHandler handler) {
  return [this, operation, action, handler](const Request& req) {
    audit::Scope audit(operation, "", req.param("name"));
    audit_by(audit, req);
    if (req.params.count("trait")) audit.field("trait", req.param("trait"));
    Response r;
    if (auto refused = refusal(req, action, req.param("name")))
      r = std::move(*refused);
    else
      r = (this->*handler)(req, audit);
    if (r.status < 400) {
      audit.ok();
    } else {
      const json body = json::parse(r.body, nullptr, false);
      const bool has_message = body.is_object() && body.contains("error") && body["error"].is_object() &&
                               body["error"].value("message", json()).is_string();
      audit.failed(std::to_string(r.status) +
                   (has_message ? ": " + body["error"]["message"].get<std::string>() : ""));
    }
    return r;
  };
}

json FleetService::host_json(const HostRecord& h) const {
  return to_json(h, now_ms(), options_.fleet.host_down_after.count());
}

// Ready to serve writes: 503 while the database cannot be reached.
Response FleetService::get_health(const Request&) {
  const Freshness f = fleet_->freshness();
  json body{{"status", f.database_down ? "unavailable" : "ok"},
            {"hosts", fleet_->index().host_count()},
            {"index_generation", fleet_->index().generation()}};
  if (f.database_down) body["reason"] = "the fleet database is unreachable: " + f.database_down->reason;
  return with_freshness(f.database_down ? 503 : 200, std::move(body), f);
}

// The process is alive and serving (reads answer from the index even while
// the database is away): always 200.
Response FleetService::get_live(const Request&) { return http::json_response(200, json{{"status", "ok"}}); }

Response FleetService::get_metrics(const Request&) {
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_text(*fleet_, reports_refused_.load(std::memory_order_relaxed));
  return r;
}

Response FleetService::query_hosts(const Request& req) {
  if (auto refused = refusal(req, Action::query, "")) return *refused;
  auto params = split_explain(req);
  if (!params.ok()) return send_error(params.error());
  auto q = parse_query(params->first);
  if (!q.ok()) return send_error(q.error());
  const auto a = fleet_->query(*q, params->second);
  json body = to_json(a);
  if (params->second) {
    json ex = json::array();
    for (const auto& e : a.excluded) ex.push_back(to_json(e));
    body["excluded"] = ex;
  }
  return with_freshness(200, std::move(body), fleet_->freshness());
}

Response FleetService::get_host(const Request& req) {
  if (auto refused = refusal(req, Action::query, req.param("name"))) return *refused;
  auto params = split_explain(req);
  if (!params.ok()) return send_error(params.error());
  auto rec = fleet_->store().get_host(req.param("name"));
  if (!rec.ok()) return send_error(rec.error());
  if (!*rec)
    return send_error(
        make_error(Errc::not_found, "no host " + quote_for_error(req.param("name")) + " in the fleet"));
  json body = host_json(**rec);
  if (params->second || !params->first.empty()) {
    auto q = parse_query(params->first);
    if (!q.ok()) return send_error(q.error());
    auto ex = fleet_->explain_host(*q, req.param("name"));
    if (!ex.ok()) return send_error(ex.error());
    body["explanation"] = to_json(*ex);
  }
  return with_etag(http::json_response(200, body), (*rec)->generation);
}

Response FleetService::put_host(const Request& req, audit::Scope& audit) {
  if (auto refused = report_limit_.take(req.param("name"), HostRateLimit::Clock::now())) {
    reports_refused_.fetch_add(1, std::memory_order_relaxed);
    if (!refused->first) audit.dismiss();  // one line a burst, not one a refused report
    return too_many_reports(req.param("name"), report_limit_.per_minute(), refused->retry_after);
  }
  auto body = parse_report_body(req.param("name"), req.body);
  if (!body.ok()) return send_error(body.error());
  if (body->report.traits.size() > options_.max_traits_per_host)
    return send_error(make_error(Errc::invalid_argument,
                                 "the report carries " + std::to_string(body->report.traits.size()) +
                                     " traits; a host may report at most " +
                                     std::to_string(options_.max_traits_per_host) +
                                     " ([fleet_service] max_traits_per_host): refused whole"));
  const auto before = fleet_->index().host_generation(req.param("name"));
  auto rec = fleet_->report(body->report, body->generation);
  if (!rec.ok()) return send_error(rec.error());
  if (before == rec->generation)
    audit.dismiss();  // a heartbeat: nothing changed
  else
    audit.field("generation", rec->generation);
  return with_etag(http::json_response(200, host_json(*rec)), rec->generation);
}

Response FleetService::delete_host(const Request& req, audit::Scope&) {
  auto gen = parse_generation("", req.header("if-match"));
  if (!gen.ok()) return send_error(gen.error());
  if (auto st = fleet_->delete_host(req.param("name"), *gen); !st.ok()) return send_error(st.error());
  return http::json_response(200, json{{"deleted", req.param("name")}});
}

Response FleetService::add_trait(const Request& req, audit::Scope&) { return trait_write(req, true); }

Response FleetService::remove_trait(const Request& req, audit::Scope&) { return trait_write(req, false); }

// Trait writes: the generation is required; a stale one is 409 carrying the current one.
Response FleetService::trait_write(const Request& req, bool add) {
  if (auto st = check_operator_trait_name(req.param("trait")); !st.ok()) return send_error(st.error());
  auto gen = parse_generation(req.body, req.header("if-match"));
  if (!gen.ok()) return send_error(gen.error());
  if (!*gen)
    return send_error(
        make_error(Errc::invalid_argument,
                   "the host generation is required: send {\"generation\": N} or If-Match: \"N\" "
                   "(GET /v1/hosts/" +
                       req.param("name") + " gives it)"));
  auto rec = add ? fleet_->add_operator_trait(req.param("name"), req.param("trait"), **gen)
                 : fleet_->remove_operator_trait(req.param("name"), req.param("trait"), **gen);
  if (!rec.ok()) {
    if (rec.error().code == Errc::conflict)
      if (auto cur = fleet_->store().get_host(req.param("name")); cur.ok() && *cur) {
        json body = http::error_json(rec.error());
        body["error"]["generation"] = (*cur)->generation;
        return with_etag(http::json_response(409, body), (*cur)->generation);
      }
    return send_error(rec.error());
  }
  return with_etag(http::json_response(200, host_json(*rec)), rec->generation);
}

}  // namespace virtcap::fleet
