// virtcap: one binary, subcommands. Exit codes: 0 success, 1 runtime failure,
// 2 usage or configuration error (see README "Exit codes").
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <optional>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "capabilities/render.h"
#include "compute/manager.h"
#include "compute/periodic.h"
#include "config/config.h"
#include "store/memory/memory_store.h"
#include "virtcap/registry.h"
#include "virtcap/version.h"

namespace {

using namespace virtcap;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

void setup_logging(bool debug) {
  auto logger = spdlog::stderr_color_mt("virtcap");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(debug ? spdlog::level::debug : spdlog::level::info);
}

// Loads config; on error prints it and returns nullopt (caller exits 2).
std::optional<config::Config> load_config(const std::optional<std::string>& path) {
  auto cfg = config::load(path);
  if (!cfg) {
    std::fprintf(stderr, "virtcap: config error: %s\n", cfg.error().message.c_str());
    return std::nullopt;
  }
  return std::move(cfg.value());
}

int print_load_failure(const Error& e) {
  std::fprintf(stderr, "virtcap: %s\n", e.message.c_str());
  return kExitRuntime;
}

int cmd_capabilities(const std::optional<std::string>& config_path, const std::string& driver,
                     const std::string& uri, const std::string& format) {
  auto cfg = load_config(config_path);
  if (!cfg) return kExitUsage;
  if (!uri.empty()) cfg->libvirt.uri = uri;
  spdlog::set_level(spdlog::level::warn);  // keep stdout clean for scripts
  store::MemoryStore store;
  auto mgr = compute::ComputeManager::create(*cfg, store, driver);
  if (!mgr) return print_load_failure(mgr.error());
  const auto& caps = mgr.value()->capabilities();
  const auto name = mgr.value()->driver_name();
  if (format == "json")
    std::cout << caps::to_json(name, caps).dump(2) << "\n";
  else if (format == "markdown")
    std::cout << caps::to_markdown(name, caps);
  else
    std::cout << caps::to_table(name, caps);
  return kExitOk;
}


int cmd_agent(const std::optional<std::string>& config_path, const std::string& driver, const std::string& uri) {
  auto cfg = load_config(config_path);
  if (!cfg) return kExitUsage;
  if (!uri.empty()) cfg->libvirt.uri = uri;
  if (cfg->defaults.debug) spdlog::set_level(spdlog::level::debug);

  // Block the termination signals in every thread; the main thread waits for
  // them synchronously below, so no handler runs in signal context.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  spdlog::info("virtcap {} agent starting (config: {})", VIRTCAP_VERSION, cfg->source);
  store::MemoryStore store;
  auto mgr = compute::ComputeManager::create(*cfg, store, driver);
  if (!mgr) return print_load_failure(mgr.error());

  compute::PeriodicTaskRunner runner({.max_jitter_seconds = static_cast<double>(cfg->defaults.periodic_fuzzy_delay)});
  mgr.value()->register_periodic_tasks(runner);
  runner.start();
  spdlog::info("agent running; send SIGTERM or SIGINT to stop");

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("received {}, stopping periodic tasks", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  runner.stop();
  spdlog::info("agent stopped cleanly");
  return kExitOk;
}

int cmd_config_show(const std::optional<std::string>& config_path) {
  auto cfg = load_config(config_path);
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
  for (const auto& d : available_drivers()) cols.push_back({d.name, d.declared, d.summary + "." + (d.discovery.empty() ? "" : " " + d.discovery)});
  std::cout << caps::schema_markdown(cols);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  setup_logging(false);
  CLI::App app{"virtcap: a compute-host agent whose manager knows what its virt driver can do.\n"
               "Exit codes: 0 success, 1 runtime failure, 2 usage or config error."};
  app.set_version_flag("--version", std::string("virtcap ") + VIRTCAP_VERSION);
  app.require_subcommand(1);

  std::optional<std::string> config_path;
  auto add_config = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config_path,
                    "TOML config file (default: " + std::string(config::kDefaultConfigPath) +
                        " if it exists, else built-in defaults)")
        ->check(CLI::ExistingFile);
  };

  std::string driver, uri, format = "table";
  auto* caps_cmd = app.add_subcommand("capabilities", "Load a driver and print its capabilities and traits");
  add_config(caps_cmd);
  caps_cmd->add_option("-d,--driver", driver, "Driver to load (default: [compute] driver). Available: " +
                                                  available_driver_names());
  caps_cmd->add_option("--uri", uri, "libvirt connection URI (overrides [libvirt] uri), e.g. qemu:///session");
  caps_cmd->add_option("-f,--format", format, "Output format")
      ->check(CLI::IsMember({"table", "json", "markdown"}))
      ->capture_default_str();

  auto* agent_cmd = app.add_subcommand("agent", "Run the compute manager and its periodic tasks until SIGTERM/SIGINT");
  add_config(agent_cmd);
  agent_cmd->add_option("-d,--driver", driver, "Driver to load (default: [compute] driver)");
  agent_cmd->add_option("--uri", uri, "libvirt connection URI (overrides [libvirt] uri)");

  auto* config_cmd = app.add_subcommand("config", "Inspect configuration");
  config_cmd->require_subcommand(1);
  auto* show_cmd = config_cmd->add_subcommand("show", "Print the effective configuration as TOML");
  add_config(show_cmd);

  std::string docs_what;
  auto* docs_cmd = app.add_subcommand("docs", "Print generated reference docs (markdown)");
  docs_cmd->add_option("what", docs_what, "Which document")
      ->required()
      ->check(CLI::IsMember({"capabilities", "config"}));

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

  if (caps_cmd->parsed()) return cmd_capabilities(config_path, driver, uri, format);
  if (agent_cmd->parsed()) return cmd_agent(config_path, driver, uri);
  if (show_cmd->parsed()) return cmd_config_show(config_path);
  if (docs_cmd->parsed()) return cmd_docs(docs_what);
  return kExitUsage;
}
