// The fleet commands of the one `virtcap` binary: `virtcap fleet serve` (the
// fleet service) and its client commands `virtcap hosts`, `virtcap hosts
// delete`, `virtcap traits add|remove`. main.cpp registers them with one call
// and runs them after parsing; output goes through main.cpp's table/json/
// value printer so every client command looks the same.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace virtcap::cli {

inline constexpr const char* kDefaultFleetServer = "http://127.0.0.1:8778";

// What main.cpp lends the fleet commands, so that one rule serves all client commands.
struct ClientKit {
  // (format, -c columns, rows, all columns as {HEADER, json key}) -> exit code
  std::function<int(const std::string&, const std::vector<std::string>&, const nlohmann::json&,
                    const std::vector<std::pair<std::string, std::string>>&)>
      rows;
};

class FleetCommands;
// Adds `fleet`, `hosts` and `traits` to `app`.
std::unique_ptr<FleetCommands, void (*)(FleetCommands*)> add_fleet_commands(CLI::App& app, ClientKit kit);
// After app.parse(): the exit code when a fleet command was given.
std::optional<int> run_fleet_commands(FleetCommands& commands);

}  // namespace virtcap::cli
