#include "cli/fleet_cli.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <variant>

#include "cli/client_options.h"
#include "cli/daemon.h"
#include "common/json_text.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/time_text.h"
#include "config/config.h"
#include "fleet/service.h"
#include "http/client.h"
#include "http/tls.h"

namespace virtcap::cli {

using nlohmann::json;

class FleetCommands {
 public:
  FleetCommands(CLI::App& app, ClientKit kit);
  std::optional<int> run();

 private:
  int serve();
  int token_create();
  int token_list();
  int token_revoke();
  // The fleet database the config's [fleet_service] names, opened and
  // migrated as serve does; on failure, the exit code (the error printed).
  std::variant<int, std::unique_ptr<fleet::FleetStore>> open_database() const;
  int hosts();
  int host_delete();
  int trait_write(bool add);
  std::string query_string() const;
  // One call; transport failures and non-2xx answers printed (exit code),
  // else nullopt with the answer in `out`.
  std::optional<int> call(http::Client& c, const std::string& method, const std::string& path,
                          const json* body, http::ClientResponse& out, bool quiet_conflict = false);

  ClientKit kit_;
  std::optional<std::string> config_path_;
  const ClientPeer peer_{"fleet service", "VIRTCAP_FLEET", "VIRTCAP_FLEET_TOKEN", kDefaultFleetServer,
                         "; it may still have been done there: see `virtcap hosts`"};
  ClientFlags client_ = client_flags_from_env(peer_);
  http::ClientOptions client_options() const {
    return {.url = client_.server,
            .token = client_.token,
            .ca_file = client_.ca_file,
            .peer = "the fleet service",
            .hint = "is `virtcap fleet serve` running? Set --server or VIRTCAP_FLEET"};
  }
  std::vector<std::string> require_, forbid_, any_of_;
  std::string resources_, host_, name_, trait_;
  bool explain_ = false, include_down_ = false, token_json_ = false;
  int limit_ = 0;
  std::string role_, token_host_, note_, token_id_;
  CLI::App *create_ = nullptr, *list_ = nullptr, *revoke_ = nullptr;
  CLI::App *serve_ = nullptr, *hosts_ = nullptr, *delete_ = nullptr, *add_ = nullptr, *remove_ = nullptr;
};

FleetCommands::FleetCommands(CLI::App& app, ClientKit kit) : kit_(std::move(kit)) {
  auto* fleet = app.add_subcommand("fleet", "The fleet service (docs/fleet.md)");
  fleet->require_subcommand(1);
  serve_ = fleet->add_subcommand("serve", "Run the fleet service ([fleet_service]) until SIGTERM/SIGINT");
  serve_
      ->add_option("-c,--config", config_path_,
                   "TOML config file (default: " + std::string(config::kDefaultConfigPath) +
                       " if it exists, else built-in defaults)")
      ->check(CLI::ExistingFile);
  auto* token = fleet->add_subcommand(
      "token",
      "Fleet credentials (docs/fleet.md, Trust model): made, listed and revoked in the fleet database "
      "[fleet_service] database names; a running service sees a change within a second");
  token->require_subcommand(1);
  create_ = token->add_subcommand("create",
                                  "Make a credential and print its token once (stdout); the database "
                                  "keeps only a salted hash of it");
  create_
      ->add_option("--role", role_, "agent (reports for one host), operator (everything), reader (queries)")
      ->required()
      ->check(CLI::IsMember({"agent", "operator", "reader"}));
  create_->add_option("--host", token_host_, "The host an agent credential speaks for (agent only)");
  create_->add_option("--note", note_, "Who or what the credential is for (shown by `token list`)");
  list_ =
      token->add_subcommand("list", "List credentials: id, role, host, created, revoked (never a secret)");
  revoke_ = token->add_subcommand(
      "revoke", "Revoke a credential by its id; requests bearing it get 401 within a second");
  revoke_->add_option("id", token_id_, "Credential id (12 hex digits, as `token list` shows)")->required();
  for (auto* c : {create_, list_, revoke_}) {
    c->add_option("-c,--config", config_path_,
                  "TOML config file (default: " + std::string(config::kDefaultConfigPath) +
                      " if it exists, else built-in defaults)")
        ->check(CLI::ExistingFile);
    c->add_flag("--json", token_json_, "Print JSON");
  }

  auto add_client = [this](CLI::App* sub) { add_client_options(sub, client_, peer_); };
  hosts_ = app.add_subcommand("hosts",
                              "Query the fleet: which hosts have these traits and this much free capacity");
  hosts_->add_option("--require", require_, "Required traits, comma-separated (repeatable)")->delimiter(',');
  hosts_->add_option("--forbid", forbid_, "Forbidden traits, comma-separated (repeatable)")->delimiter(',');
  hosts_->add_option("--any-of", any_of_,
                     "At least one of these traits, comma-separated (repeatable: each is one group)");
  hosts_->add_option("--resources", resources_, "Free capacity asked, e.g. VCPU:2,MEMORY_MB:2048,DISK_GB:10");
  hosts_->add_flag("--explain", explain_, "Also break the excluded hosts down by their first failing reason");
  hosts_->add_option("--host", host_, "With --explain: every reason for this one host");
  hosts_->add_flag("--include-down", include_down_, "Also match hosts not heard from in host_down_after");
  hosts_->add_option("--limit", limit_, "List at most this many matches (server default 100)")
      ->check(CLI::Range(1, 10000));
  add_client(hosts_);
  delete_ = hosts_->add_subcommand("delete",
                                   "Remove a host from the fleet (an operator action; agents never do it)");
  delete_->add_option("name", name_, "Host name")->required();
  add_client(delete_);
  auto* traits = app.add_subcommand("traits", "Set or remove an operator (CUSTOM_*) trait on a fleet host");
  traits->require_subcommand(1);
  add_ = traits->add_subcommand("add", "Add a CUSTOM_* trait to a host");
  remove_ = traits->add_subcommand("remove", "Remove a CUSTOM_* trait from a host");
  for (auto* c : {add_, remove_}) {
    c->add_option("host", name_, "Host name")->required();
    c->add_option("trait", trait_, "Trait, CUSTOM_[A-Z0-9_]+")->required();
    add_client(c);
  }
}

std::optional<int> FleetCommands::run() {
  if (client_.json) client_.format = "json";
  if (serve_->parsed()) return serve();
  if (create_->parsed()) return token_create();
  if (list_->parsed()) return token_list();
  if (revoke_->parsed()) return token_revoke();
  if (delete_->parsed() || hosts_->parsed() || add_->parsed() || remove_->parsed()) {
    auto url = server_url(client_.server, peer_);
    if (!url.ok()) return fail(url.error().message, kExitUsage);
    client_.server = std::move(url.value());
  }
  if (delete_->parsed()) return host_delete();
  if (hosts_->parsed()) return hosts();
  if (add_->parsed()) return trait_write(true);
  if (remove_->parsed()) return trait_write(false);
  return std::nullopt;
}

int FleetCommands::serve() {
  auto cfg = config::load(config_path_);
  if (!cfg.ok()) return fail("config error: " + cfg.error().message, kExitUsage);
  const logging::Options log{cfg->defaults.debug ? logging::LogLevel::debug : cfg->defaults.log_level,
                             cfg->defaults.log_format, cfg->defaults.log_file};
  if (auto st = logging::setup(log); !st.ok()) return fail("config error: " + st.error().message, kExitUsage);
  const auto checked = fleet::service_options(*cfg).http;
  if (auto st = http::check_listen(checked); !st.ok())
    return fail("config error: " + st.error().message, kExitUsage);
  // The TLS pair too is checked before anything is opened: a refused start
  // (a key that does not match its certificate) creates no database.
  if (auto tls = http::load_tls(checked.tls_cert, checked.tls_key, checked.config_section, now_seconds());
      !tls.ok())
    return fail("config error: " + tls.error().message, kExitUsage);
  DaemonSignals signals;  // before any thread starts, as in the agent

  // The port before the database, as the agent does: a second service on a
  // taken address is refused (2) before it opens or migrates anything.
  auto listen_fd = http::listen_socket(cfg->fleet_service.listen);
  if (!listen_fd.ok()) return fail("[fleet_service] listen: " + listen_fd.error().message, kExitUsage);
  auto opts = fleet::service_options(*cfg);
  opts.http.listen_fd = listen_fd.value();  // the HTTP server owns it from here (closed if never adopted)
  spdlog::info("virtcap fleet service starting (config: {}, database: {})", cfg->source,
               opts.fleet.database_url.starts_with("sqlite:") ? opts.fleet.database_url : "postgresql");
  auto svc = fleet::FleetService::open(std::move(opts));
  if (!svc.ok()) return fail("cannot open the fleet database: " + svc.error().message, kExitRuntime);
  auto port = (*svc)->bind();
  if (!port.ok())
    return fail(port.error().message,
                port.error().code == Errc::invalid_argument ? kExitUsage : kExitRuntime);
  const auto hp = split_listen(cfg->fleet_service.listen);
  spdlog::info("fleet service listening on {}://{}:{}", (*svc)->scheme(), hp->first, *port);
  if (auto st = (*svc)->start(); !st.ok()) return fail(st.error().message, kExitRuntime);
  spdlog::info("fleet service running ({} hosts indexed); send SIGTERM or SIGINT to stop",
               (*svc)->fleet().index().host_count());
  const char* stop = signals.wait([&] {
    if (auto st = logging::reopen(log); !st.ok()) spdlog::error("SIGHUP: {}", st.error().message);
    if (auto st = (*svc)->reload_tls(); !st.ok())
      spdlog::error("SIGHUP: {}; still serving the previous certificate", st.error().message);
  });
  spdlog::info("received {}, shutting down", stop);
  (*svc)->stop();
  spdlog::info("fleet service stopped cleanly");
  return kExitOk;
}

std::variant<int, std::unique_ptr<fleet::FleetStore>> FleetCommands::open_database() const {
  auto cfg = config::load(config_path_);
  if (!cfg.ok()) return fail("config error: " + cfg.error().message, kExitUsage);
  auto store = fleet::open_fleet_store(fleet::service_options(*cfg).fleet.database_url);
  if (!store.ok()) return fail("cannot open the fleet database: " + store.error().message, kExitRuntime);
  return std::move(*store);
}

namespace {

json credential_json(const fleet::CredentialRecord& c) {
  return {{"id", c.id},
          {"role", std::string(fleet::to_string(c.role))},
          {"host", c.host.empty() ? json() : json(c.host)},
          {"created", utc_text(c.created_ms / 1000)},
          {"revoked", c.revoked_ms ? json(utc_text(c.revoked_ms / 1000)) : json()},
          {"note", c.note}};
}

}  // namespace

int FleetCommands::token_create() {
  auto made = fleet::make_credential(*fleet::role_from_string(role_), token_host_, note_, now_ms());
  if (!made.ok()) return fail(made.error().message, kExitUsage);
  auto store = open_database();
  if (store.index() == 0) return std::get<0>(store);
  if (auto st = std::get<1>(store)->add_credential(made->record); !st.ok())
    return fail("credential not made: " + st.error().message, kExitRuntime);
  if (token_json_) {
    json j = credential_json(made->record);
    j["token"] = made->token;
    std::cout << dump_json(j, 2) << "\n";
  } else {
    std::cout << made->token << "\n";
    std::cerr << "made credential " << made->record.id << " (role " << role_
              << (token_host_.empty() ? "" : ", host " + token_host_)
              << "); the token above is shown only this once: keep it like a password\n";
  }
  return kExitOk;
}

int FleetCommands::token_list() {
  auto store = open_database();
  if (store.index() == 0) return std::get<0>(store);
  auto rows = std::get<1>(store)->list_credentials();
  if (!rows.ok()) return fail("cannot list credentials: " + rows.error().message, kExitRuntime);
  json out = json::array();
  for (const auto& c : *rows) out.push_back(credential_json(c));
  return kit_.rows(token_json_ ? "json" : "table", {}, out,
                   {{"ID", "id"},
                    {"ROLE", "role"},
                    {"HOST", "host"},
                    {"CREATED", "created"},
                    {"REVOKED", "revoked"},
                    {"NOTE", "note"}});
}

int FleetCommands::token_revoke() {
  auto store = open_database();
  if (store.index() == 0) return std::get<0>(store);
  auto rec = std::get<1>(store)->revoke_credential(token_id_, now_ms());
  if (!rec.ok())
    return fail(rec.error().message, rec.error().code == Errc::not_found ? kExitUsage : kExitRuntime);
  if (token_json_)
    std::cout << dump_json(credential_json(*rec), 2) << "\n";
  else
    std::cout << "revoked credential " << rec->id << " (role " << fleet::to_string(rec->role)
              << (rec->host.empty() ? "" : ", host " + rec->host) << ")\n";
  return kExitOk;
}

std::optional<int> FleetCommands::call(http::Client& c, const std::string& method, const std::string& path,
                                       const json* body, http::ClientResponse& out, bool quiet_conflict) {
  return call_reported(
      c, client_, peer_, method, path, body, out,
      {.quiet_status = quiet_conflict ? 409 : 0,
       .hint_status = 409,
       .hint = "(the host changed again while this command ran, after one retry; run it again)"});
}

std::string FleetCommands::query_string() const {
  std::vector<std::pair<std::string, std::string>> q;
  std::vector<std::string> terms = require_;
  for (const auto& t : forbid_) terms.push_back("!" + t);
  const std::string req = join(terms, ",");
  if (!req.empty()) q.emplace_back("required", req);
  for (const auto& g : any_of_) q.emplace_back("required", "in:" + g);
  if (!resources_.empty()) q.emplace_back("resources", resources_);
  if (limit_ > 0) q.emplace_back("limit", std::to_string(limit_));
  if (include_down_) q.emplace_back("include_down", "true");
  if (explain_) q.emplace_back("explain", "true");
  std::string out;
  for (const auto& [k, v] : q) out += (out.empty() ? "?" : "&") + k + "=" + http::percent_encode(v);
  return out;
}

int FleetCommands::hosts() {
  if (!host_.empty() && !explain_) return fail("--host NAME needs --explain", kExitUsage);
  http::Client c(client_options());
  http::ClientResponse r;
  const std::string path = host_.empty() ? "/v1/hosts" : "/v1/hosts/" + http::percent_encode(host_);
  if (auto rc = call(c, "GET", path + query_string(), nullptr, r)) return *rc;
  const json& j = r.body;
  if (client_.format == "json" && client_.columns.empty()) {
    std::cout << dump_json(j, 2) << "\n";
    return kExitOk;
  }
  if (!host_.empty()) {
    const json& e = j["explanation"];
    json rows = json::array();
    for (const auto& reason : e["reasons"])
      rows.push_back({{"reason", reason["reason"]}, {"detail", reason["message"]}});
    if (client_.format == "table")
      std::cout << "host " << host_ << ": " << (e["matches"].get<bool>() ? "matches" : "excluded")
                << " (index generation " << text(e["index_generation"]) << ")\n";
    return rows.empty() ? kExitOk
                        : kit_.rows(client_.format, client_.columns, rows,
                                    {{"REASON", "reason"}, {"DETAIL", "detail"}});
  }
  json rows = json::array();
  for (const auto& h : j["hosts"]) {
    json row = {{"name", h["name"]}, {"uuid", h["uuid"]}, {"last_seen_age_s", h["last_seen_age_s"]}};
    for (const char* rc : {"VCPU", "MEMORY_MB", "DISK_GB"})
      row[rc] = h["free"].contains(rc) ? h["free"][rc] : json();
    rows.push_back(row);
  }
  const int rc = kit_.rows(client_.format, client_.columns, rows,
                           {{"NAME", "name"},
                            {"UUID", "uuid"},
                            {"VCPU", "VCPU"},
                            {"MEMORY_MB", "MEMORY_MB"},
                            {"DISK_GB", "DISK_GB"},
                            {"SEEN(s)", "last_seen_age_s"}});
  if (client_.format != "table") return rc;
  std::cout << "matched " << text(j["matched"]) << " of " << text(j["hosts_total"])
            << " hosts (index generation " << text(j["index_generation"]) << ")\n";
  // The index's freshness: with --explain always, else only when it may be behind.
  const bool current = !j.contains("index_current") || j["index_current"] == true;
  if (explain_ || !current) {
    std::cout << "index: " << (current ? "current" : text(j["index_age_s"]) + " s behind at most");
    if (j.contains("database"))
      std::cout << " (the fleet database is unreachable for " << text(j["database"]["unreachable_s"])
                << " s: " << text(j["database"]["reason"]) << ")";
    std::cout << "\n";
  }
  if (j.contains("excluded") && !j["excluded"].empty()) {
    std::cout << "excluded, by first failing reason:\n";
    for (const auto& e : j["excluded"])
      std::cout << "  " << text(e["hosts"]) << "  " << text(e["message"]) << "\n";
  }
  return rc;
}

int FleetCommands::host_delete() {
  http::Client c(client_options());
  http::ClientResponse r;
  if (auto rc = call(c, "DELETE", "/v1/hosts/" + http::percent_encode(name_), nullptr, r)) return *rc;
  // What the server says it deleted, not what was asked.
  if (!r.body.contains("deleted") || !r.body["deleted"].is_string())
    return not_our_api(client_, r.status, "no \"deleted\" in the answer");
  if (client_.format == "json")
    std::cout << dump_json(r.body, 2) << "\n";
  else
    std::cout << "deleted host " << r.body["deleted"].get<std::string>() << "\n";
  return kExitOk;
}

// Reads the host's generation, then writes with it; a 409 (the host changed
// in between, e.g. an agent report) is retried once with the generation the
// 409 carries.
int FleetCommands::trait_write(bool add) {
  http::Client c(client_options());
  http::ClientResponse r;
  const std::string host_path = "/v1/hosts/" + http::percent_encode(name_);
  if (auto rc = call(c, "GET", host_path, nullptr, r)) return *rc;
  json body = {{"generation", r.body.value("generation", std::int64_t{0})}};
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool last = attempt == 1;
    if (auto rc = call(c, add ? "PUT" : "DELETE", host_path + "/traits/" + http::percent_encode(trait_),
                       &body, r, !last))
      return *rc;
    if (r.status != 409) break;
    body["generation"] = r.body["error"].value("generation", std::int64_t{0});
  }
  if (client_.format == "json") {
    std::cout << dump_json(r.body, 2) << "\n";
    return kExitOk;
  }
  std::cout << (add ? "added " : "removed ") << trait_ << (add ? " to " : " from ") << name_
            << " (host generation " << text(r.body["generation"]) << ")\n";
  return kExitOk;
}

std::unique_ptr<FleetCommands, void (*)(FleetCommands*)> add_fleet_commands(CLI::App& app, ClientKit kit) {
  return {new FleetCommands(app, std::move(kit)), [](FleetCommands* c) { delete c; }};
}

std::optional<int> run_fleet_commands(FleetCommands& commands) { return commands.run(); }

}  // namespace virtcap::cli
