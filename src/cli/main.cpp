// virtcap: one binary, subcommands. Exit codes: 0 success, 1 runtime failure,
// 2 usage or configuration error (see README "Exit codes").
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "api/instance_list.h"
#include "api/server.h"
#include "capabilities/render.h"
#include "cli/cli_docs.h"
#include "cli/client_options.h"
#include "cli/daemon.h"
#include "cli/fleet_cli.h"
#include "common/fd.h"
#include "common/json_text.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/state_lock.h"
#include "common/strings.h"
#include "common/subprocess.h"
#include "common/time.h"
#include "common/time_text.h"
#include "compute/manager.h"
#include "compute/periodic.h"
#include "config/config.h"
#include "http/client.h"
#include "http/server.h"
#include "http/tls.h"
#include "imagecache/pass.h"
#include "store/memory/memory_store.h"
#include "store/sqlite/sqlite_store.h"
#include "virt/registry.h"
#include "virtcap/version.h"

namespace {

using namespace virtcap;
using nlohmann::json;

using cli::fail;
using cli::kExitOk;
using cli::kExitRuntime;
using cli::kExitUnreachable;
using cli::kExitUsage;
using cli::text;

logging::Options log_options(const config::Config& cfg) {
  return {cfg.defaults.debug ? logging::LogLevel::debug : cfg.defaults.log_level, cfg.defaults.log_format,
          cfg.defaults.log_file};
}

// Loads config; on error prints it and returns nullopt (caller exits 2).
std::optional<config::Config> load_config(const std::optional<std::string>& path) {
  auto cfg = config::load(path);
  if (!cfg.ok()) {
    fail("config error: " + cfg.error().message, kExitUsage);
    return std::nullopt;
  }
  proc::set_default_timeout(std::chrono::seconds(cfg->defaults.subprocess_timeout));
  return std::move(cfg.value());
}

// An unknown driver name is a usage/config error (exit 2), found before
// anything is opened: systemd's RestartPreventExitStatus=2 then stops.
std::optional<int> check_driver_name(const config::Config& cfg, const std::string& override_name) {
  const std::string& name = override_name.empty() ? cfg.compute.driver : override_name;
  for (const auto& d : available_drivers())
    if (d.name == name) return std::nullopt;
  return fail(std::string(override_name.empty() ? "config error: [compute] driver" : "--driver") + " '" +
                  name + "' is not a driver this virtcap has; available: " + available_driver_names(),
              kExitUsage);
}

// Every check `virtcap agent` makes before it starts anything; nullopt when
// all pass, else the exit code (2) after printing what is wrong.
std::optional<int> startup_checks(const config::Config& cfg, const std::string& driver_override) {
  if (auto bad = check_driver_name(cfg, driver_override)) return bad;
  const http::Options api = api::http_options(cfg);
  if (auto st = http::check_listen(api); !st.ok())
    return fail("config error: " + st.error().message, kExitUsage);
  if (auto tls = http::load_tls(api.tls_cert, api.tls_key, api.config_section, now_seconds()); !tls.ok())
    return fail("config error: " + tls.error().message, kExitUsage);
  const std::filesystem::path state(cfg.defaults.state_path);
  std::error_code ec;
  const auto probe = std::filesystem::exists(state, ec) ? state : state.parent_path();
  if (!std::filesystem::is_directory(probe, ec))
    return fail("config error: [DEFAULT] state_path = " + cfg.defaults.state_path +
                    ": neither it nor its parent directory exists; create it (mkdir -p) or fix the path",
                kExitUsage);
  if (::access(probe.c_str(), W_OK) != 0)
    return fail("config error: [DEFAULT] state_path = " + cfg.defaults.state_path + ": " + probe.string() +
                    " is not writable by this user",
                kExitUsage);
  return std::nullopt;
}

// The configured instance store.
Result<std::unique_ptr<InstanceStore>> open_store(const config::Config& cfg) {
  if (cfg.store.backend == config::StoreBackend::memory)
    return std::unique_ptr<InstanceStore>(std::make_unique<store::MemoryStore>());
  auto s = store::SqliteStore::open(cfg.store_path());
  if (!s.ok()) return s.error();
  return std::unique_ptr<InstanceStore>(std::move(s.value()));
}

struct Options {
  std::optional<std::string> config_path;
  std::string driver, uri, format = "table";
  bool dry_run = false;
  cli::ClientFlags client;  // client commands: --server, --token, --ca-file, --format, --json, -c
  // client command arguments
  std::string id, name, image, mac, network, tag;
  std::string memory = "512";
  int vcpus = 1;
  int timeout = 300;  // seconds a client command waits for the agent's answer (boot --timeout)
  // list: GET /v1/instances query parameters (checked by the agent)
  std::map<std::string, std::string> list_params;
  bool list_long = false, list_deleted = false;
  std::string docs_what;  // docs: which document
};

int cmd_capabilities_local(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (!o.uri.empty()) cfg->libvirt.uri = o.uri;
  if (auto bad = check_driver_name(*cfg, o.driver)) return *bad;
  spdlog::set_level(spdlog::level::warn);                             // keep stdout clean for scripts
  auto inspected = compute::ComputeManager::inspect(*cfg, o.driver);  // writes nothing
  if (!inspected.ok()) return fail(inspected.error().message);
  const auto& [name, caps] = inspected.value();
  if (o.format == "json")
    std::cout << dump_json(caps::to_json(name, caps), 2) << "\n";
  else if (o.format == "markdown")
    std::cout << caps::to_markdown(name, caps);
  else
    std::cout << caps::to_table(name, caps);
  return kExitOk;
}

// Converge after a crash before serving anything.
void reconcile_at_start(compute::ComputeManager& manager) {
  if (auto r = manager.reconcile(true); r.ok()) {
    spdlog::info(
        "reconcile at start: {} interrupted spawns finished, {} rolled back, {} deletes finished, {} lost, "
        "{} unknown domains, {} orphan directories",
        r->finished_spawns.size(), r->rolled_back_spawns.size(), r->finished_deletes.size(), r->lost.size(),
        r->unknown_domains.size(), r->orphan_dirs.size());
  } else {
    spdlog::warn("reconcile at start failed: {}", r.error().describe());
  }
}

// SIGHUP: reopen the log file (logrotate) and re-read the log options; and
// the TLS certificate and key, read again from [api] tls_cert/tls_key.
void reload_agent(const Options& o, const config::Config& running, api::Server& server) {
  auto fresh = config::load(o.config_path);
  const auto opts = fresh.ok() ? log_options(*fresh) : log_options(running);
  if (!fresh.ok())
    spdlog::warn("SIGHUP: config not re-read ({}); reopening the log file only", fresh.error().message);
  if (Status st = logging::reopen(opts); !st.ok())
    spdlog::error("SIGHUP: {}", st.error().message);
  else
    spdlog::info("SIGHUP: log file reopened; log_level {}, log_format {}", config::to_string(opts.level),
                 config::to_string(opts.format));
  if (Status st = server.reload_tls(); !st.ok())
    spdlog::error("SIGHUP: {}; still serving the previous certificate", st.error().message);
}

int cmd_agent(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (!o.uri.empty()) cfg->libvirt.uri = o.uri;
  if (Status st = logging::setup(log_options(*cfg)); !st.ok())
    return fail("config error: " + st.error().message, kExitUsage);
  if (auto bad = startup_checks(*cfg, o.driver)) return *bad;
  cli::DaemonSignals signals;  // before any thread starts

  // One agent per state directory, decided before the store or the
  // hypervisor is touched: a second start changes nothing.
  auto state_lock = StateLock::acquire(cfg->defaults.state_path);
  if (!state_lock.ok()) return fail(state_lock.error().message, kExitUsage);
  // Then the API port, still before the store and the hypervisor: an agent
  // whose port is taken changes nothing either.
  auto api_socket = http::listen_socket(cfg->api.listen);
  if (!api_socket.ok()) return fail("[api] listen: " + api_socket.error().message, kExitUsage);
  UniqueFd api_fd(api_socket.value());

  spdlog::info("virtcap {} agent starting (config: {})", VIRTCAP_VERSION, cfg->source);
  api::tune_allocator();
  auto store = open_store(*cfg);
  if (!store.ok()) return fail("cannot open the instance store: " + store.error().message);
  spdlog::info("instance store: {} ({})", config::to_string(cfg->store.backend),
               cfg->store.backend == config::StoreBackend::sqlite ? cfg->store_path() : "not durable");
  auto mgr = compute::ComputeManager::create(*cfg, *store.value(), o.driver);
  if (!mgr.ok()) return fail(mgr.error().message);
  auto& manager = *mgr.value();
  reconcile_at_start(manager);

  compute::PeriodicTaskRunner runner(
      {.max_jitter_seconds = static_cast<double>(cfg->defaults.periodic_fuzzy_delay)});
  manager.register_periodic_tasks(runner);
  api::Server server(*cfg, manager, runner, api_fd.release());
  auto port = server.bind();  // adopts the bound socket
  if (!port.ok())
    return fail(port.error().message,
                port.error().code == Errc::invalid_argument ? kExitUsage : kExitRuntime);
  const auto hp = split_listen(cfg->api.listen);
  spdlog::info("API listening on {}://{}:{}", server.scheme(), hp->first, port.value());
  manager.fleet_reporter().set_api_url(std::string(server.scheme()) + "://" + hp->first + ":" +
                                       std::to_string(port.value()));
  if (auto st = server.start(); !st.ok()) return fail(st.error().message, kExitRuntime);
  runner.start();
  spdlog::info("agent running; send SIGTERM or SIGINT to stop");

  const char* stop = signals.wait([&] { reload_agent(o, *cfg, server); });
  spdlog::info("received {}, shutting down: finishing in-flight requests", stop);
  server.stop();
  spdlog::info("stopping periodic tasks");
  runner.stop();
  spdlog::info("agent stopped cleanly");
  return kExitOk;  // the store closes as it goes out of scope
}

int cmd_imagecache_local(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (!o.uri.empty()) cfg->libvirt.uri = o.uri;
  if (auto bad = check_driver_name(*cfg, o.driver)) return *bad;
  if (o.format == "json") spdlog::set_level(spdlog::level::warn);
  auto store = open_store(*cfg);
  if (!store.ok()) return fail("cannot open the instance store: " + store.error().message);
  auto mgr = compute::ComputeManager::create(*cfg, *store.value(), o.driver);
  if (!mgr.ok()) return fail(mgr.error().message);
  auto r = mgr.value()->image_cache_pass(o.dry_run);
  if (!r.ok()) return fail(r.error().message);
  if (o.format == "json")
    std::cout << dump_json(imagecache::to_json(r.value()), 2) << "\n";
  else
    std::cout << imagecache::to_table(r.value());
  return r->complete ? kExitOk : kExitRuntime;
}

int cmd_config_validate(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (auto bad = startup_checks(*cfg, o.driver)) return *bad;
  if (auto warning = http::check_listen(api::http_options(*cfg)); warning.ok() && !warning->empty())
    std::fprintf(stderr, "virtcap: warning: %s\n", warning->c_str());
  std::cout << "configuration OK (" << cfg->source << "): driver "
            << (o.driver.empty() ? cfg->compute.driver : o.driver) << ", API on "
            << (cfg->api.tls_cert.empty() ? "http://" : "https://") << cfg->api.listen << ", state in "
            << cfg->defaults.state_path << "\n";
  return kExitOk;
}

int cmd_config_show(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  std::cout << config::to_toml(*cfg);
  return kExitOk;
}

int cmd_docs(const std::string& what) {
  if (what == "config") {
    std::cout << config::docs_markdown();
    return kExitOk;
  }
  std::vector<caps::DriverColumn> cols;
  for (const auto& d : available_drivers())
    cols.push_back({d.name, d.declared, d.summary + "." + (d.discovery.empty() ? "" : " " + d.discovery)});
  std::cout << caps::schema_markdown(cols);
  return kExitOk;
}

// ---- client commands -------------------------------------------------------

std::string pad(std::string s, std::size_t w) {
  s.resize(std::max(w, s.size()), ' ');
  return s;
}

// "2026-11-26T09:01:36Z" for a *_at field in unix seconds.
std::string iso_time(const json& v) {
  if (!v.is_number_integer()) return text(v);
  return utc_text(v.get<std::int64_t>());
}

struct Column {
  std::string header;  // as printed and as given to -c (case-insensitive)
  std::string key;     // the JSON field
};

std::string cell(const json& row, const Column& c) {
  const json& v = row.contains(c.key) ? row[c.key] : json();
  if (c.key.size() > 3 && c.key.ends_with("_at")) return iso_time(v);
  return text(v);
}

// The columns -c asked for (by header or field name), in -c's order; all
// when none. An unknown name is a usage error, listing the known ones.
std::optional<std::vector<Column>> pick(const Options& o, const std::vector<Column>& all) {
  if (o.client.columns.empty()) return all;
  auto lower = [](std::string v) {
    for (auto& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return v;
  };
  std::vector<Column> out;
  for (const auto& want : o.client.columns) {
    auto it = std::find_if(all.begin(), all.end(),
                           [&](const Column& c) { return lower(c.header) == lower(want) || c.key == want; });
    if (it == all.end()) {
      fail("-c " + want + ": no such column; columns: " + join(all, ", ", &Column::header), kExitUsage);
      return std::nullopt;
    }
    out.push_back(*it);
  }
  return out;
}

// Rows as a table sized to fit its contents, one JSON array, or bare values.
int emit_rows(const Options& o, const json& rows, const std::vector<Column>& all) {
  const auto cols = pick(o, all);
  if (!cols) return kExitUsage;
  if (o.client.format == "json") {
    json out = json::array();
    for (const auto& r : rows) {
      if (o.client.columns.empty()) {
        out.push_back(r);
        continue;
      }
      json picked = json::object();
      for (const auto& c : *cols) picked[c.key] = r.contains(c.key) ? r[c.key] : json();
      out.push_back(picked);
    }
    std::cout << dump_json(out, 2) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (const auto& c : *cols) line.push_back(cell(r, c));
    cells.push_back(std::move(line));
  }
  if (o.client.format == "value") {
    for (const auto& line : cells) {
      for (std::size_t i = 0; i < line.size(); ++i) std::cout << (i ? " " : "") << line[i];
      std::cout << "\n";
    }
    return kExitOk;
  }
  std::vector<std::size_t> w;
  for (const auto& c : *cols) w.push_back(c.header.size());
  for (const auto& line : cells)
    for (std::size_t i = 0; i < line.size(); ++i) w[i] = std::max(w[i], line[i].size());
  for (std::size_t i = 0; i < cols->size(); ++i)
    std::cout << (i + 1 < cols->size() ? pad((*cols)[i].header, w[i] + 2) : (*cols)[i].header);
  std::cout << "\n";
  for (const auto& line : cells) {
    for (std::size_t i = 0; i < line.size(); ++i)
      std::cout << (i + 1 < line.size() ? pad(line[i], w[i] + 2) : line[i]);
    std::cout << "\n";
  }
  return kExitOk;
}

// One object as FIELD / VALUE rows (show, boot, attach).
int emit_object(const Options& o, const json& obj) {
  if (o.client.format == "json" && o.client.columns.empty()) {
    std::cout << dump_json(obj, 2) << "\n";
    return kExitOk;
  }
  std::vector<Column> all;
  for (const auto& [k, v] : obj.items()) all.push_back({k, k});
  const auto cols = pick(o, all);
  if (!cols) return kExitUsage;
  if (o.client.format == "json") {
    json picked = json::object();
    for (const auto& c : *cols) picked[c.key] = obj[c.key];
    std::cout << dump_json(picked, 2) << "\n";
    return kExitOk;
  }
  json rows = json::array();
  for (const auto& c : *cols) rows.push_back({{"field", c.key}, {"value", cell(obj, c)}});
  Options plain = o;
  plain.client.columns.clear();
  if (o.client.format == "value") {
    for (const auto& r : rows) std::cout << r["value"].get<std::string>() << "\n";
    return kExitOk;
  }
  return emit_rows(plain, rows, {{"FIELD", "field"}, {"VALUE", "value"}});
}

const std::vector<Column> kInstanceColumns = {{"UUID", "uuid"},       {"NAME", "name"},
                                              {"IMAGE", "image"},     {"STATE", "vm_state"},
                                              {"TASK", "task_state"}, {"CREATED", "created_at"}};
// list --long: power state (the hypervisor's), memory and vCPUs too.
const std::vector<Column> kInstanceLongColumns = {
    {"UUID", "uuid"},         {"NAME", "name"},       {"IMAGE", "image"},           {"STATE", "vm_state"},
    {"POWER", "power_state"}, {"TASK", "task_state"}, {"MEMORY(MiB)", "memory_mb"}, {"VCPUS", "vcpus"},
    {"CREATED", "created_at"}};
// The same columns as `virtcap imagecache`'s table.
const std::vector<Column> kImageCacheColumns = {{"FILE", "name"},          {"KIND", "kind"},
                                                {"STATE", "state"},        {"BYTES", "bytes"},
                                                {"AGE(s)", "age_seconds"}, {"REASON", "reason"}};

// `virtcap image list`: one row per repository file.
int emit_images(const Options& o, const json& j) {
  if (o.client.format == "json" && o.client.columns.empty()) {
    std::cout << dump_json(j, 2) << "\n";
    return kExitOk;
  }
  const int rc = emit_rows(o, j["images"],
                           {{"ID", "id"},
                            {"FILE", "file"},
                            {"FORMAT", "format"},
                            {"VIRTUAL_SIZE", "virtual_size"},
                            {"FILE_SIZE", "file_size"},
                            {"BASE_CACHED", "base_cached"},
                            {"PROBLEM", "problem"}});
  if (o.client.format == "table" && j["repository"].is_string())
    std::cout << "repository: " << text(j["repository"]) << "\n";
  return rc;
}

// The agent's side of the shared client options (cli/client_options.h).
const cli::ClientPeer kAgentPeer{"agent", "VIRTCAP_SERVER", "VIRTCAP_TOKEN", http::kDefaultServer,
                                 " (--timeout); it may still finish there: see `virtcap list`"};

// "--memory 1G" / "512M" / "512" (MiB) -> MiB, as qemu-img and virsh take
// sizes (binary units). nullopt, after printing why, for anything else.
std::optional<int> parse_memory_mib(const std::string& v) {
  std::size_t end = 0;
  while (end < v.size() && std::isdigit(static_cast<unsigned char>(v[end]))) ++end;
  std::string unit = v.substr(end);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.ends_with("IB") || unit.ends_with("B"))) unit = unit.substr(0, 1);
  static const std::pair<const char*, int> kShift[] = {{"", 0}, {"M", 0}, {"G", 10}, {"T", 20}};
  if (end == 0 || end > 9) {
    fail("--memory '" + v + "': expected a size such as 512, 512M, 2G or 1T (no suffix: MiB)", kExitUsage);
    return std::nullopt;
  }
  const long long n = std::stoll(v.substr(0, end));
  for (const auto& [u, shift] : kShift)
    if (unit == u) {
      const long long mib = n << shift;
      if (!compute::memory_mb_in_range(mib)) {
        fail("--memory '" + v + "' is " + std::to_string(mib) + " MiB; it must be from 16 MiB to 16 TiB",
             kExitUsage);
        return std::nullopt;
      }
      return static_cast<int>(mib);
    }
  fail("--memory '" + v + "': unknown unit '" + v.substr(end) + "'; use M, G or T (binary: 1G = 1024 MiB)",
       kExitUsage);
  return std::nullopt;
}

int client_call(const Options& o, const std::string& method, const std::string& path, const json* body,
                const std::function<int(const json&)>& human,
                const std::vector<std::pair<std::string, std::string>>& field_flags = {}) {
  const auto url = cli::server_url(o.client.server, kAgentPeer);
  if (!url.ok()) return fail(url.error().message, kExitUsage);
  cli::ClientFlags flags = o.client;
  flags.server = *url;
  http::Client client(http::ClientOptions{.url = *url,
                                          .token = o.client.token,
                                          .ca_file = o.client.ca_file,
                                          .timeout = std::chrono::seconds(o.timeout)});
  http::ClientResponse r;
  if (auto rc =
          cli::call_reported(client, flags, kAgentPeer, method, path, body, r, {.field_flags = field_flags}))
    return *rc;
  return human(r.body);
}

// `virtcap list`: every page, following the agent's next links, unless
// --limit or --marker asks for one page (then the next marker goes to stderr).
int cmd_list(const Options& o) {
  auto params = o.list_params;
  if (o.list_long) params["long"] = "true";
  if (o.list_deleted) params["deleted"] = "true";
  const bool one_page = params.count("limit") || params.count("marker");
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"status", "--status"},        {"power_state", "--power-state"}, {"name", "--name"},
      {"sort_key", "--sort-column"}, {"sort_dir", "--sort-dir"},       {"limit", "--limit"},
      {"marker", "--marker"}};
  json all = json::array(), next;
  for (std::string path = api::instances_path(params);;) {
    const int rc = client_call(
        o, "GET", path, nullptr,
        [&](const json& j) {
          if (!j.contains("instances") || !j["instances"].is_array())
            return cli::not_our_api(o.client, 200, "no \"instances\" list in the answer");
          for (const auto& i : j["instances"]) {
            if (!i.is_object()) return cli::not_our_api(o.client, 200, "an instance that is not an object");
            all.push_back(i);
          }
          next = j.contains("next") ? j["next"] : json();
          return kExitOk;
        },
        flags);
    if (rc != kExitOk) return rc;
    if (one_page || !next.is_string() || next.get<std::string>() == path) break;
    path = next.get<std::string>();
  }
  if (one_page && next.is_string() && o.client.format != "json")
    std::cerr << "more instances follow: --marker " << all.back().value("uuid", "") << "\n";
  if (o.client.format == "json" && o.client.columns.empty()) {
    std::cout << dump_json(json{{"instances", all}, {"next", one_page ? next : json()}}, 2) << "\n";
    return kExitOk;
  }
  auto columns = o.list_long ? kInstanceLongColumns : kInstanceColumns;
  if (o.list_deleted) columns.push_back({"DELETED", "deleted_at"});
  return emit_rows(o, all, columns);
}

}  // namespace

namespace {
int run_main(int argc, char** argv);
}  // namespace

// An answer of the wrong shape (a 200 with an object missing a field, or a
// field of another type) surfaces as a JSON exception while a command reads
// it: exit 1 naming the server, never an abort. Anything else is a bug and
// still aborts.
int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const nlohmann::json::exception& e) {
    if (virtcap::cli::last_server().empty()) throw;
    return virtcap::cli::not_our_api(virtcap::cli::ClientFlags{}, 0, e.what());
  }
}

namespace {

// What runs once the command line is parsed: the action of the one command given.
class Dispatch {
 public:
  void on(CLI::App* command, std::function<int()> action) {
    actions_.emplace_back(command, std::move(action));
  }
  std::optional<int> run() const {
    for (const auto& entry : actions_)
      if (entry.first->parsed()) return entry.second();
    return std::nullopt;
  }

 private:
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
};

void add_config_option(CLI::App* sub, Options& o) {
  sub->add_option("-c,--config", o.config_path,
                  "TOML config file (default: " + std::string(config::kDefaultConfigPath) +
                      " if it exists, else built-in defaults)")
      ->check(CLI::ExistingFile);
}

void add_driver_options(CLI::App* sub, Options& o) {
  sub->add_option("-d,--driver", o.driver,
                  "Driver to load (default: [compute] driver). Available: " + available_driver_names());
  sub->add_option("--uri", o.uri, "libvirt connection URI (overrides [libvirt] uri), e.g. qemu:///session");
}

// `capabilities --server URL`: the running agent's, as a table (or its JSON).
int cmd_capabilities_remote(Options o) {
  if (o.format == "json") o.client.format = "json";  // capabilities --server URL --format json
  return client_call(o, "GET", "/v1/capabilities", nullptr, [&](const json& j) {
    if (o.client.format == "json") {
      std::cout << dump_json(j, 2) << "\n";
      return kExitOk;
    }
    json rows = json::array();
    for (const auto& c : j["capabilities"])
      rows.push_back({{"name", c["name"]}, {"value", caps::value_text(c["value"])}, {"doc", c["doc"]}});
    std::cout << "driver: " << text(j["driver"]) << "\n\n";
    const int rc = emit_rows(o, rows, {{"NAME", "name"}, {"VALUE", "value"}, {"DOC", "doc"}});
    std::cout << "\ntraits:";
    for (const auto& t : j["traits"]) std::cout << "\n  " << text(t);
    std::cout << "\n";
    return rc;
  });
}

void register_capabilities(CLI::App& app, Options& o, Dispatch& d) {
  auto* cmd =
      app.add_subcommand("capabilities", "Print a driver's capabilities and traits (local, or --server)");
  add_config_option(cmd, o);
  add_driver_options(cmd, o);
  cmd->add_option("-f,--format", o.format, "Output format (local)")
      ->check(CLI::IsMember({"table", "json", "markdown"}))
      ->capture_default_str();
  auto* server =
      cmd->add_option("--server", o.client.server, "Ask a running agent instead of loading a driver");
  cmd->add_option("--token", o.client.token, "Bearer token for --server (env VIRTCAP_TOKEN)");
  cmd->add_option("--ca-file", o.client.ca_file,
                  "PEM CA certificate(s) for an https:// --server (env VIRTCAP_CA_FILE)");
  d.on(cmd, [&o, server] {
    return server->count() == 0 ? cmd_capabilities_local(o) : cmd_capabilities_remote(o);
  });
}

// The local commands: agent, imagecache, config show|validate, docs.
void register_local_commands(CLI::App& app, Options& o, Dispatch& d) {
  auto* agent = app.add_subcommand(
      "agent", "Run the compute service: API, manager and periodic tasks, until SIGTERM/SIGINT");
  add_config_option(agent, o);
  add_driver_options(agent, o);
  d.on(agent, [&o] { return cmd_agent(o); });

  auto* ic = app.add_subcommand("imagecache",
                                "Run one image-cache pass now, locally (same code as the periodic task)");
  add_config_option(ic, o);
  add_driver_options(ic, o);
  ic->add_flag("--dry-run", o.dry_run, "Decide and report, remove and touch nothing");
  ic->add_option("-f,--format", o.format, "Output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  d.on(ic, [&o] { return cmd_imagecache_local(o); });

  auto* config_cmd = app.add_subcommand("config", "Inspect configuration");
  config_cmd->require_subcommand(1);
  auto* show = config_cmd->add_subcommand("show", "Print the effective configuration as TOML");
  add_config_option(show, o);
  d.on(show, [&o] { return cmd_config_show(o); });
  auto* validate = config_cmd->add_subcommand(
      "validate", "Run every start-up check of `virtcap agent` without starting it; exit 2 on a problem");
  add_config_option(validate, o);
  validate->add_option("-d,--driver", o.driver, "Driver to check instead of [compute] driver");
  d.on(validate, [&o] { return cmd_config_validate(o); });

  auto* docs = app.add_subcommand("docs", "Print generated reference docs (markdown)");
  docs->add_option("what", o.docs_what,
                   "Which document: capabilities, config (markdown), man (man page), bash-completion")
      ->required()
      ->check(CLI::IsMember({"capabilities", "config", "man", "bash-completion"}));
  d.on(docs, [&app, &o] {
    if (o.docs_what == "man")
      std::cout << cli::man_page(app, VIRTCAP_VERSION);
    else if (o.docs_what == "bash-completion")
      std::cout << cli::bash_completion(app);
    else
      return cmd_docs(o.docs_what);
    return kExitOk;
  });
}

int cmd_boot(const Options& o) {
  const auto memory_mb = parse_memory_mib(o.memory);
  if (!memory_mb) return kExitUsage;
  json body = {{"name", o.name}, {"image", o.image}, {"memory_mb", *memory_mb}, {"vcpus", o.vcpus}};
  return client_call(o, "POST", "/v1/instances", &body, [&](const json& j) { return emit_object(o, j); },
                     {{"memory_mb", "--memory"}, {"vcpus", "--vcpus"}});
}

// boot and list.
void register_boot_and_list(CLI::App& app, Options& o, Dispatch& d) {
  auto* boot = app.add_subcommand("boot", "Boot an instance");
  boot->add_option("name", o.name, "Instance name")->required();
  boot->add_option("--image", o.image, "Image id (a file <id>.raw or <id>.qcow2 in [images] path)")
      ->required();
  boot->add_option("--memory", o.memory, "Memory: MiB, or with a unit: 512M, 2G, 1T")->capture_default_str();
  boot->add_option("--vcpus", o.vcpus, "vCPUs: 1 to the driver's max_vcpus")->capture_default_str();
  boot->add_option("--timeout", o.timeout, "Seconds to wait for the instance to be active (then exit 1)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cli::add_client_options(boot, o.client, kAgentPeer);
  d.on(boot, [&o] { return cmd_boot(o); });

  auto* list =
      app.add_subcommand("list", "List this host's instances (every page; filtered and sorted by the agent)");
  for (const auto& [flag, param, help] : std::vector<std::array<std::string, 3>>{
           {"--status", "status", "Only instances in this vm_state: building, active, error, lost, deleted"},
           {"--power-state", "power_state",
            "Only instances in this hypervisor power state: nostate, running, paused, shutdown, crashed, "
            "suspended"},
           {"--name", "name",
            "Only instances whose name matches this regular expression (RE2 syntax, unanchored)"},
           {"--sort-column", "sort_key", "Sort by: " + sort_key_names() + " (default created_at)"},
           {"--sort-dir", "sort_dir", "Sort direction: asc (default) or desc"},
           {"--limit", "limit", "Show one page of at most this many instances (1-1000)"},
           {"--marker", "marker", "Show the page after this instance uuid"}})
    list->add_option_function<std::string>(
        flag, [&o, param = param](const std::string& v) { o.list_params[param] = v; }, help);
  list->add_flag("-l,--long", o.list_long, "Add power state, memory and vCPUs columns");
  list->add_flag("--deleted", o.list_deleted, "Include deleted instances (and a DELETED column)");
  cli::add_client_options(list, o.client, kAgentPeer);
  d.on(list, [&o] { return cmd_list(o); });
}

// delete, reboot, detach-interface: the agent answers {"<done>": what}; a
// table prints "<done> <what>".
int call_and_say(const Options& o, const std::string& method, const std::string& path,
                 const std::string& done) {
  return client_call(o, method, path, nullptr, [&](const json& j) {
    if (o.client.format != "table") return emit_object(o, j);
    std::cout << done << " " << text(j[done]) << "\n";
    return kExitOk;
  });
}

int cmd_attach(const Options& o) {
  json body = json::object();
  if (!o.mac.empty()) body["mac"] = o.mac;
  if (!o.network.empty()) body["network"] = o.network;
  if (!o.tag.empty()) body["tag"] = o.tag;
  return client_call(o, "POST", "/v1/instances/" + o.id + "/interfaces", &body,
                     [&](const json& j) { return emit_object(o, j); });
}

// The commands on one instance: show, delete, reboot, attach-interface, detach-interface.
void register_instance_commands(CLI::App& app, Options& o, Dispatch& d) {
  auto* show = app.add_subcommand("show", "Show one instance, with its hypervisor state");
  auto* del = app.add_subcommand("delete", "Delete an instance (its domain and disk; the base image stays)");
  auto* reboot = app.add_subcommand("reboot", "Reboot an instance");
  auto* attach = app.add_subcommand("attach-interface",
                                    "Hot-plug a network interface (needs supports_attach_interface)");
  attach->add_option("--mac", o.mac, "MAC address (default: generated)");
  attach->add_option("--network", o.network, "libvirt network (default: [libvirt] network)");
  attach->add_option("--tag", o.tag, "Device tag (needs supports_tagged_attach_interface)");
  auto* detach = app.add_subcommand("detach-interface", "Remove a network interface");
  for (auto* c : {show, del, reboot, attach, detach})
    c->add_option("instance", o.id, "Instance uuid or name")->required();
  detach->add_option("mac", o.mac, "MAC address")->required();
  for (auto* c : {show, del, reboot, attach, detach}) cli::add_client_options(c, o.client, kAgentPeer);
  d.on(show, [&o] {
    return client_call(o, "GET", "/v1/instances/" + o.id, nullptr,
                       [&](const json& j) { return emit_object(o, j); });
  });
  d.on(del, [&o] { return call_and_say(o, "DELETE", "/v1/instances/" + o.id, "deleted"); });
  d.on(reboot, [&o] { return call_and_say(o, "POST", "/v1/instances/" + o.id + "/reboot", "rebooted"); });
  d.on(attach, [&o] { return cmd_attach(o); });
  d.on(detach, [&o] {
    return call_and_say(o, "DELETE", "/v1/instances/" + o.id + "/interfaces/" + o.mac, "detached");
  });
}

int cmd_tasks(const Options& o) {
  return client_call(o, "GET", "/v1/tasks", nullptr, [&](const json& j) {
    if (o.client.format == "json" && o.client.columns.empty()) {
      std::cout << dump_json(j, 2) << "\n";
      return kExitOk;
    }
    json rows = json::array();
    for (const auto& t : j["tasks"]) {
      json r = t;
      r["enabled_text"] = t["enabled"].get<bool>() ? "yes" : "no";
      r["detail"] = t["enabled"].get<bool>() ? t["last_message"] : t["disabled_reason"];
      rows.push_back(r);
    }
    return emit_rows(o, rows,
                     {{"TASK", "name"},
                      {"EVERY(s)", "spacing_seconds"},
                      {"ENABLED", "enabled_text"},
                      {"RUNS", "runs"},
                      {"LAST", "last_result"},
                      {"DETAIL", "detail"}});
  });
}

int cmd_image_cache_pass(const Options& o) {
  json body = {{"dry_run", o.dry_run}};
  return client_call(o, "POST", "/v1/image-cache/pass", &body, [&](const json& j) {
    if (o.client.format == "json" && o.client.columns.empty()) {
      std::cout << dump_json(j, 2) << "\n";
      return kExitOk;
    }
    const int rc = emit_rows(o, j["files"], kImageCacheColumns);
    if (o.client.format == "table")
      std::cout << "removed " << text(j["files_removed"]) << " file(s), " << text(j["bytes_freed"])
                << " bytes freed; " << (j["complete"].get<bool>() ? "complete" : "INCOMPLETE") << "\n";
    return rc;
  });
}

// The agent's own state: tasks, image-cache pass, image list.
void register_agent_queries(CLI::App& app, Options& o, Dispatch& d) {
  auto* tasks = app.add_subcommand("tasks", "Show the periodic tasks");
  auto* icp = app.add_subcommand("image-cache", "Image-cache commands against the agent");
  icp->require_subcommand(1);
  auto* icp_pass = icp->add_subcommand("pass", "Run an image-cache pass in the agent now");
  icp_pass->add_flag("--dry-run", o.dry_run, "Decide and report only");
  auto* image_cmd = app.add_subcommand("image", "Image repository commands against the agent");
  image_cmd->require_subcommand(1);
  auto* image_list = image_cmd->add_subcommand(
      "list", "List the agent's image repository: format (by magic), virtual and file size, base cached");
  for (auto* c : {tasks, icp_pass, image_list}) cli::add_client_options(c, o.client, kAgentPeer);
  d.on(tasks, [&o] { return cmd_tasks(o); });
  d.on(icp_pass, [&o] { return cmd_image_cache_pass(o); });
  d.on(image_list, [&o] {
    return client_call(o, "GET", "/v1/images", nullptr, [&](const json& j) { return emit_images(o, j); });
  });
}

// The fleet commands print through the same table/json/value printer.
cli::ClientKit client_kit(const Options& o) {
  return {[&o](const std::string& format, const std::vector<std::string>& columns, const json& rows,
               const std::vector<std::pair<std::string, std::string>>& all) {
    Options p = o;
    p.client.format = format;
    p.client.columns = columns;
    std::vector<Column> cols;
    for (const auto& [header, key] : all) cols.push_back({header, key});
    return emit_rows(p, rows, cols);
  }};
}

// An unknown first word is a usage error listing the commands (CLI11 would
// take it for an argument).
std::optional<int> refuse_unknown_command(CLI::App& app, int argc, char** argv) {
  if (argc <= 1 || argv[1][0] == '-') return std::nullopt;
  const auto subs = app.get_subcommands({});
  const std::string names = join(subs, ", ", [](const CLI::App* sub) { return sub->get_name(); });
  const bool known =
      std::any_of(subs.begin(), subs.end(), [&](const CLI::App* sub) { return sub->get_name() == argv[1]; });
  if (known) return std::nullopt;
  return fail(std::string("unknown command '") + argv[1] + "'; commands: " + names + " (see virtcap --help)",
              kExitUsage);
}

// nullopt when parsed; else the exit code (help and version: 0).
std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return std::nullopt;
}

int run_main(int argc, char** argv) {
  (void)logging::setup({});
  CLI::App app{
      "virtcap: a compute-host agent whose manager knows what its virt driver can do.\n"
      "Exit codes: 0 success; 1 the operation failed; 2 bad usage, argument or config (including\n"
      "values the agent refuses, a wrong --token, an unreadable --ca-file); 3 could not reach the agent\n"
      "(including a refused TLS certificate)."};
  app.set_version_flag("--version", std::string("virtcap ") + VIRTCAP_VERSION);
  app.require_subcommand(1);
  Options o;
  o.client = cli::client_flags_from_env(kAgentPeer);
  Dispatch d;
  register_capabilities(app, o, d);
  register_local_commands(app, o, d);
  register_boot_and_list(app, o, d);
  register_instance_commands(app, o, d);
  register_agent_queries(app, o, d);
  const auto fleet_commands = cli::add_fleet_commands(app, client_kit(o));

  if (auto rc = refuse_unknown_command(app, argc, argv)) return *rc;
  if (auto rc = parse(app, argc, argv)) return *rc;
  if (o.client.json) o.client.format = "json";
  if (auto rc = cli::run_fleet_commands(*fleet_commands)) return *rc;
  return d.run().value_or(kExitUsage);
}

}  // namespace
