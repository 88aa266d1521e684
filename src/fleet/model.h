// The fleet model: hosts, their traits (each with an owner) and their
// inventories. See docs/fleet.md for the rules (ownership, generations,
// liveness).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.h"
#include "virtcap/error.h"

namespace virtcap::fleet {

// Who owns a trait on a host. An agent report replaces exactly the agent-owned
// set; operator traits (CUSTOM_*) are only ever changed by an operator.
enum class TraitOwner : std::uint8_t { agent, operator_ };
std::string_view to_string(TraitOwner owner);
std::optional<TraitOwner> trait_owner_from_string(std::string_view s);

// The resource classes a host inventories. Anything else is an error.
enum class ResourceClass : std::uint8_t { vcpu, memory_mb, disk_gb };
inline constexpr std::size_t kResourceClassCount = 3;
inline constexpr std::array kAllResourceClasses = {ResourceClass::vcpu, ResourceClass::memory_mb,
                                                   ResourceClass::disk_gb};
std::string_view to_string(ResourceClass rc);
// invalid_argument naming the bad text and the known classes.
Result<ResourceClass> resource_class_from_string(std::string_view s);

// Trait names: os-traits style, [A-Z0-9_]+, at most kMaxTraitName bytes.
// Operator traits: CUSTOM_[A-Z0-9_]+. Agents may not report CUSTOM_* names.
inline constexpr std::size_t kMaxTraitName = 255;
// invalid_argument naming the bad text (escaped) and the rule, or ok.
Status check_trait_name(std::string_view name);
Status check_operator_trait_name(std::string_view name);
Status check_agent_trait_name(std::string_view name);
bool is_custom_trait(std::string_view name);
// `text` made printable and bounded for an error message (non-printable
// bytes as \xNN, cut after 64 bytes).
std::string quote_for_error(std::string_view text);

struct Inventory {
  std::int64_t total = 0;
  std::int64_t reserved = 0;
  double allocation_ratio = 1.0;
  std::int64_t used = 0;

  // (total - reserved) * allocation_ratio - used, rounded down; may be < 0.
  std::int64_t free() const;
  bool operator==(const Inventory&) const = default;
};
// invalid_argument for negative amounts, a ratio <= 0 or not finite, or
// reserved > total.
Status check_inventory(ResourceClass rc, const Inventory& inv);

// Per resource class; a class a host does not report has no inventory (and
// no free capacity).
using Inventories = std::array<std::optional<Inventory>, kResourceClassCount>;

struct HostTrait {
  std::string name;
  TraitOwner owner = TraitOwner::agent;
  bool operator==(const HostTrait&) const = default;
};

// One host as stored. `traits` is sorted by name.
struct HostRecord {
  std::string uuid;
  std::string name;
  std::int64_t generation = 0;
  std::int64_t last_seen_ms = 0;  // unix time, milliseconds
  std::string agent_version;
  std::string api_url;
  std::vector<HostTrait> traits;
  Inventories inventories;
  bool operator==(const HostRecord&) const = default;
};

// What an agent sends: its whole agent-owned state.
struct AgentReport {
  std::string name;
  std::string uuid;
  std::string agent_version;
  std::string api_url;
  std::vector<std::string> traits;  // any order, duplicates allowed
  Inventories inventories;
  std::int64_t seen_at_ms = 0;  // when the report arrived (unix ms)
};

// Checks every field (names, uuid, traits, inventories); invalid_argument
// naming the first bad one.
Status check_report(const AgentReport& report);
Status check_host_name(std::string_view name);
Status check_uuid(std::string_view uuid);

using virtcap::now_ms;  // Unix time now, in milliseconds (common/time.h)

}  // namespace virtcap::fleet
