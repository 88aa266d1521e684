// virtcap: one binary, subcommands. Exit codes: 0 success, 1 runtime failure,
// 2 usage or configuration error (see README "Exit codes").
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "api/client.h"
#include "api/server.h"
#include "capabilities/render.h"
#include "compute/manager.h"
#include "common/subprocess.h"
#include "common/json_text.h"
#include "compute/periodic.h"
#include "config/config.h"
#include "http/server.h"
#include "imagecache/pass.h"
#include "store/memory/memory_store.h"
#include "store/sqlite/sqlite_store.h"
#include "virtcap/registry.h"
#include "virtcap/version.h"

namespace {

using namespace virtcap;
using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("virtcap");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::info);
}

int fail(const std::string& message, int code = kExitRuntime) {
  std::fprintf(stderr, "virtcap: %s\n", message.c_str());
  return code;
}

// Loads config; on error prints it and returns nullopt (caller exits 2).
std::optional<config::Config> load_config(const std::optional<std::string>& path) {
  auto cfg = config::load(path);
  if (!cfg) {
    fail("config error: " + cfg.error().message, kExitUsage);
    return std::nullopt;
  }
  proc::set_default_timeout(std::chrono::seconds(cfg->defaults.subprocess_timeout));
  return std::move(cfg.value());
}

// The configured instance store.
Result<std::unique_ptr<InstanceStore>> open_store(const config::Config& cfg) {
  if (cfg.store.backend == "memory") return std::unique_ptr<InstanceStore>(std::make_unique<store::MemoryStore>());
  auto s = store::SqliteStore::open(cfg.store_path());
  if (!s) return s.error();
  return std::unique_ptr<InstanceStore>(std::move(s.value()));
}

struct Options {
  std::optional<std::string> config_path;
  std::string driver, uri, format = "table";
  bool dry_run = false, json_out = false;
  std::string server, token;
  // client command arguments
  std::string id, name, image, mac, network, tag;
  int memory_mb = 512, vcpus = 1;
};

int cmd_capabilities_local(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (!o.uri.empty()) cfg->libvirt.uri = o.uri;
  spdlog::set_level(spdlog::level::warn);  // keep stdout clean for scripts
  store::MemoryStore store;
  auto mgr = compute::ComputeManager::create(*cfg, store, o.driver);
  if (!mgr) return fail(mgr.error().message);
  const auto& caps = mgr.value()->capabilities();
  const auto name = mgr.value()->driver_name();
  if (o.format == "json") std::cout << dump_json(caps::to_json(name, caps), 2) << "\n";
  else if (o.format == "markdown") std::cout << caps::to_markdown(name, caps);
  else std::cout << caps::to_table(name, caps);
  return kExitOk;
}

int cmd_agent(const Options& o) {
  auto cfg = load_config(o.config_path);
  if (!cfg) return kExitUsage;
  if (!o.uri.empty()) cfg->libvirt.uri = o.uri;
  if (cfg->defaults.debug) spdlog::set_level(spdlog::level::debug);
  if (auto st = http::check_listen(cfg->api.listen, cfg->api.token, "[api]"); !st)
    return fail("config error: " + st.error().message, kExitUsage);

  // Block the termination signals in every thread; the main thread waits for
  // them synchronously below, so no handler runs in signal context.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  spdlog::info("virtcap {} agent starting (config: {})", VIRTCAP_VERSION, cfg->source);
  api::tune_allocator();
  auto store = open_store(*cfg);
  if (!store) return fail("cannot open the instance store: " + store.error().message);
  spdlog::info("instance store: {} ({})", cfg->store.backend,
               cfg->store.backend == "sqlite" ? cfg->store_path() : "not durable");
  auto mgr = compute::ComputeManager::create(*cfg, *store.value(), o.driver);
  if (!mgr) return fail(mgr.error().message);
  auto& manager = *mgr.value();

  // Converge after a crash before serving anything.
  if (auto r = manager.reconcile(true); r) {
    spdlog::info("reconcile at start: {} interrupted spawns finished, {} rolled back, {} deletes finished, {} lost, "
                 "{} unknown domains, {} orphan directories",
                 r->finished_spawns.size(), r->rolled_back_spawns.size(), r->finished_deletes.size(), r->lost.size(),
                 r->unknown_domains.size(), r->orphan_dirs.size());
  } else {
    spdlog::warn("reconcile at start failed: {}", r.error().describe());
  }

  compute::PeriodicTaskRunner runner({.max_jitter_seconds = static_cast<double>(cfg->defaults.periodic_fuzzy_delay)});
  manager.register_periodic_tasks(runner);
  api::Server server(*cfg, manager, runner);
  auto port = server.bind();
  if (!port) return fail(port.error().message, port.error().code == Errc::invalid_argument ? kExitUsage : kExitRuntime);
  const auto hp = config::split_listen(cfg->api.listen);
  spdlog::info("API listening on http://{}:{}", hp->first, port.value());
  if (auto st = server.start(); !st) return fail(st.error().message, kExitRuntime);
  runner.start();
  spdlog::info("agent running; send SIGTERM or SIGINT to stop");

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("received {}, shutting down: finishing in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
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
  if (o.format == "json") spdlog::set_level(spdlog::level::warn);
  auto store = open_store(*cfg);
  if (!store) return fail("cannot open the instance store: " + store.error().message);
  auto mgr = compute::ComputeManager::create(*cfg, *store.value(), o.driver);
  if (!mgr) return fail(mgr.error().message);
  auto r = mgr.value()->image_cache_pass(o.dry_run);
  if (!r) return fail(r.error().message);
  if (o.format == "json") std::cout << dump_json(imagecache::to_json(r.value()), 2) << "\n";
  else std::cout << imagecache::to_table(r.value());
  return r->complete ? kExitOk : kExitRuntime;
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

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return dump_json(v);
}

void print_instances(const json& list) {
  std::cout << pad("UUID", 36) << "  " << pad("NAME", 20) << "  " << pad("IMAGE", 16) << "  " << pad("STATE", 9)
            << "  TASK\n";
  for (const auto& i : list)
    std::cout << pad(text(i["uuid"]), 36) << "  " << pad(text(i["name"]), 20) << "  " << pad(text(i["image"]), 16)
              << "  " << pad(text(i["vm_state"]), 9) << "  " << text(i["task_state"]) << "\n";
}

void print_object(const json& o) {
  std::size_t w = 0;
  for (const auto& [k, v] : o.items()) w = std::max(w, k.size());
  for (const auto& [k, v] : o.items()) std::cout << pad(k, w) << "  " << text(v) << "\n";
}

int client_call(const Options& o, const std::string& method, const std::string& path, const json* body,
                const std::function<void(const json&)>& human) {
  api::Client client(o.server, o.token);
  auto r = client.request(method, path, body);
  if (!r) {
    std::string msg = r.error().message;
    if (!r.error().capability.empty()) msg += " [capability: " + r.error().capability + "]";
    return fail(msg);
  }
  if (o.json_out) std::cout << dump_json(*r, 2) << "\n";
  else human(r.value());
  return kExitOk;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  setup_logging();
  CLI::App app{"virtcap: a compute-host agent whose manager knows what its virt driver can do.\n"
               "Exit codes: 0 success, 1 runtime failure, 2 usage or config error."};
  app.set_version_flag("--version", std::string("virtcap ") + VIRTCAP_VERSION);
  app.require_subcommand(1);
  Options o;
  o.server = env_or("VIRTCAP_SERVER", api::kDefaultServer);
  o.token = env_or("VIRTCAP_TOKEN", "");

  auto add_config = [&](CLI::App* sub) {
    sub->add_option("-c,--config", o.config_path,
                    "TOML config file (default: " + std::string(config::kDefaultConfigPath) +
                        " if it exists, else built-in defaults)")
        ->check(CLI::ExistingFile);
  };
  auto add_driver = [&](CLI::App* sub) {
    sub->add_option("-d,--driver", o.driver, "Driver to load (default: [compute] driver). Available: " +
                                                 available_driver_names());
    sub->add_option("--uri", o.uri, "libvirt connection URI (overrides [libvirt] uri), e.g. qemu:///session");
  };
  auto add_client = [&](CLI::App* sub) {
    sub->add_option("--server", o.server, "Agent URL (env VIRTCAP_SERVER)")->capture_default_str();
    sub->add_option("--token", o.token, "Bearer token (env VIRTCAP_TOKEN)");
    sub->add_flag("--json", o.json_out, "Print the API's JSON instead of a table");
  };

  auto* caps_cmd = app.add_subcommand("capabilities", "Print a driver's capabilities and traits (local, or --server)");
  add_config(caps_cmd);
  add_driver(caps_cmd);
  caps_cmd->add_option("-f,--format", o.format, "Output format (local)")
      ->check(CLI::IsMember({"table", "json", "markdown"}))
      ->capture_default_str();
  auto* caps_server = caps_cmd->add_option("--server", o.server, "Ask a running agent instead of loading a driver");
  caps_cmd->add_option("--token", o.token, "Bearer token for --server (env VIRTCAP_TOKEN)");

  auto* agent_cmd = app.add_subcommand("agent", "Run the compute service: API, manager and periodic tasks, until SIGTERM/SIGINT");
  add_config(agent_cmd);
  add_driver(agent_cmd);

  auto* ic_cmd = app.add_subcommand("imagecache", "Run one image-cache pass now, locally (same code as the periodic task)");
  add_config(ic_cmd);
  add_driver(ic_cmd);
  ic_cmd->add_flag("--dry-run", o.dry_run, "Decide and report, remove and touch nothing");
  ic_cmd->add_option("-f,--format", o.format, "Output format")->check(CLI::IsMember({"table", "json"}))->capture_default_str();

  auto* config_cmd = app.add_subcommand("config", "Inspect configuration");
  config_cmd->require_subcommand(1);
  auto* show_cfg = config_cmd->add_subcommand("show", "Print the effective configuration as TOML");
  add_config(show_cfg);

  std::string docs_what;
  auto* docs_cmd = app.add_subcommand("docs", "Print generated reference docs (markdown)");
  docs_cmd->add_option("what", docs_what, "Which document")->required()->check(CLI::IsMember({"capabilities", "config"}));

  // Client commands: talk to a running agent.
  auto* boot = app.add_subcommand("boot", "Boot an instance");
  boot->add_option("name", o.name, "Instance name")->required();
  boot->add_option("--image", o.image, "Image id (a file <id>.raw or <id>.qcow2 in [images] path)")->required();
  boot->add_option("--memory", o.memory_mb, "Memory in MiB")->capture_default_str();
  boot->add_option("--vcpus", o.vcpus, "vCPUs")->capture_default_str();
  auto* list = app.add_subcommand("list", "List this host's instances");
  auto* show = app.add_subcommand("show", "Show one instance, with its hypervisor state");
  auto* del = app.add_subcommand("delete", "Delete an instance (its domain and disk; the base image stays)");
  auto* reboot = app.add_subcommand("reboot", "Reboot an instance");
  auto* attach = app.add_subcommand("attach-interface", "Hot-plug a network interface (needs supports_attach_interface)");
  attach->add_option("--mac", o.mac, "MAC address (default: generated)");
  attach->add_option("--network", o.network, "libvirt network (default: [libvirt] network)");
  attach->add_option("--tag", o.tag, "Device tag (needs supports_tagged_attach_interface)");
  auto* detach = app.add_subcommand("detach-interface", "Remove a network interface");
  for (auto* c : {show, del, reboot, attach, detach}) c->add_option("instance", o.id, "Instance uuid or name")->required();
  detach->add_option("mac", o.mac, "MAC address")->required();
  auto* tasks = app.add_subcommand("tasks", "Show the periodic tasks");
  auto* icp = app.add_subcommand("image-cache", "Image-cache commands against the agent");
  icp->require_subcommand(1);
  auto* icp_pass = icp->add_subcommand("pass", "Run an image-cache pass in the agent now");
  icp_pass->add_flag("--dry-run", o.dry_run, "Decide and report only");
  for (auto* c : {boot, list, show, del, reboot, attach, detach, tasks, icp_pass}) add_client(c);

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

  if (caps_cmd->parsed()) {
    if (caps_server->count() == 0) return cmd_capabilities_local(o);
    return client_call(o, "GET", "/v1/capabilities", nullptr, [](const json& j) {
      std::cout << "driver: " << text(j["driver"]) << "\n\n";
      for (const auto& c : j["capabilities"])
        std::cout << pad(text(c["name"]), 34) << pad(caps::value_text(c["value"]), 14) << text(c["doc"]) << "\n";
      std::cout << "traits:";
      for (const auto& t : j["traits"]) std::cout << "\n  " << text(t);
      std::cout << "\n";
    });
  }
  if (agent_cmd->parsed()) return cmd_agent(o);
  if (ic_cmd->parsed()) return cmd_imagecache_local(o);
  if (show_cfg->parsed()) return cmd_config_show(o);
  if (docs_cmd->parsed()) return cmd_docs(docs_what);

  if (boot->parsed()) {
    json body = {{"name", o.name}, {"image", o.image}, {"memory_mb", o.memory_mb}, {"vcpus", o.vcpus}};
    return client_call(o, "POST", "/v1/instances", &body, [](const json& j) { print_object(j); });
  }
  if (list->parsed())
    return client_call(o, "GET", "/v1/instances", nullptr, [](const json& j) { print_instances(j["instances"]); });
  if (show->parsed()) return client_call(o, "GET", "/v1/instances/" + o.id, nullptr, [](const json& j) { print_object(j); });
  if (del->parsed())
    return client_call(o, "DELETE", "/v1/instances/" + o.id, nullptr,
                       [](const json& j) { std::cout << "deleted " << text(j["deleted"]) << "\n"; });
  if (reboot->parsed())
    return client_call(o, "POST", "/v1/instances/" + o.id + "/reboot", nullptr,
                       [](const json& j) { std::cout << "rebooted " << text(j["rebooted"]) << "\n"; });
  if (attach->parsed()) {
    json body = json::object();
    if (!o.mac.empty()) body["mac"] = o.mac;
    if (!o.network.empty()) body["network"] = o.network;
    if (!o.tag.empty()) body["tag"] = o.tag;
    return client_call(o, "POST", "/v1/instances/" + o.id + "/interfaces", &body, [](const json& j) { print_object(j); });
  }
  if (detach->parsed())
    return client_call(o, "DELETE", "/v1/instances/" + o.id + "/interfaces/" + o.mac, nullptr,
                       [](const json& j) { std::cout << "detached " << text(j["detached"]) << "\n"; });
  if (tasks->parsed())
    return client_call(o, "GET", "/v1/tasks", nullptr, [](const json& j) {
      std::cout << pad("TASK", 26) << pad("EVERY(s)", 10) << pad("ENABLED", 9) << pad("RUNS", 6) << pad("LAST", 9)
                << "DETAIL\n";
      for (const auto& t : j["tasks"]) {
        const std::string detail = t["enabled"].get<bool>() ? text(t["last_message"]) : text(t["disabled_reason"]);
        std::cout << pad(text(t["name"]), 26) << pad(text(t["spacing_seconds"]), 10)
                  << pad(t["enabled"].get<bool>() ? "yes" : "no", 9) << pad(text(t["runs"]), 6)
                  << pad(text(t["last_result"]), 9) << detail << "\n";
      }
    });
  if (icp_pass->parsed()) {
    json body = {{"dry_run", o.dry_run}};
    return client_call(o, "POST", "/v1/image-cache/pass", &body, [](const json& j) {
      std::cout << pad("FILE", 42) << pad("KIND", 11) << pad("STATE", 14) << "REASON\n";
      for (const auto& f : j["files"])
        std::cout << pad(text(f["name"]), 42) << pad(text(f["kind"]), 11) << pad(text(f["state"]), 14)
                  << text(f["reason"]) << "\n";
      std::cout << "removed " << text(j["files_removed"]) << " file(s), " << text(j["bytes_freed"])
                << " bytes freed; " << (j["complete"].get<bool>() ? "complete" : "INCOMPLETE") << "\n";
    });
  }
  return kExitUsage;
}
