// The fleet service's JSON shapes, shared by the service, the agent's
// reporter and the `virtcap hosts` / `virtcap traits` client commands.
// Request bodies are untrusted bytes: parsed and validated here (fuzzed by
// tests/fuzz/fleet_query_fuzz.cpp together with the query parser). Every
// field and status is in docs/fleet.md ("API").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "fleet/index.h"
#include "fleet/model.h"

namespace virtcap::fleet {

// PUT /v1/hosts/{name}:
// {"uuid", "traits": [...], "inventories": {"VCPU": {"total", "reserved",
//  "allocation_ratio", "used"}, ...}, "agent_version", "api_url"[, "generation"]}
struct ReportBody {
  AgentReport report;
  std::optional<std::int64_t> generation;
};
nlohmann::json to_json(const AgentReport& report);
// invalid_argument naming the bad field; `name` comes from the path.
Result<ReportBody> parse_report_body(std::string_view name, const std::string& body);

// PUT/DELETE /v1/hosts/{name}/traits/{trait}: the generation from the body
// {"generation": N} or the If-Match header ("N" or N). nullopt: neither.
Result<std::optional<std::int64_t>> parse_generation(const std::string& body, const std::string& if_match);

nlohmann::json to_json(const HostRecord& host, std::int64_t now_ms, std::int64_t down_after_ms);
nlohmann::json to_json(const HostMatch& match);
nlohmann::json to_json(const Exclusion& e);
nlohmann::json to_json(const Answer& answer);
nlohmann::json to_json(const HostExplanation& e);
nlohmann::json free_json(const std::array<std::optional<std::int64_t>, kResourceClassCount>& free);

}  // namespace virtcap::fleet
