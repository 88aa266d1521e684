#include "fleet/model.h"

#include <cmath>
#include <cstdio>

#include "common/uuid.h"

namespace virtcap::fleet {

namespace {

constexpr std::array<std::string_view, kResourceClassCount> kClassNames = {"VCPU", "MEMORY_MB", "DISK_GB"};
constexpr std::string_view kCustomPrefix = "CUSTOM_";

bool trait_char(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

}  // namespace

std::string_view to_string(TraitOwner owner) { return owner == TraitOwner::agent ? "agent" : "operator"; }

std::optional<TraitOwner> trait_owner_from_string(std::string_view s) {
  if (s == "agent") return TraitOwner::agent;
  if (s == "operator") return TraitOwner::operator_;
  return std::nullopt;
}

std::string_view to_string(ResourceClass rc) { return kClassNames[static_cast<std::size_t>(rc)]; }

Result<ResourceClass> resource_class_from_string(std::string_view s) {
  for (auto rc : kAllResourceClasses)
    if (to_string(rc) == s) return rc;
  return invalid_argument_error("unknown resource class " + quote_for_error(s) +
                                ": use one of VCPU, MEMORY_MB, DISK_GB");
}

std::string quote_for_error(std::string_view text) {
  constexpr std::size_t kMax = 64;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (text.size() > kMax) out += "...(" + std::to_string(text.size()) + " bytes)";
  return out + "\"";
}

Status check_trait_name(std::string_view name) {
  if (name.empty())
    return invalid_argument_error("empty trait name: a trait is [A-Z0-9_]+, e.g. COMPUTE_IMAGE_TYPE_QCOW2");
  if (name.size() > kMaxTraitName)
    return invalid_argument_error("trait name " + quote_for_error(name) + " is longer than " +
                                  std::to_string(kMaxTraitName) + " bytes");
  for (char c : name)
    if (!trait_char(c))
      return invalid_argument_error("malformed trait name " + quote_for_error(name) +
                                    ": a trait is [A-Z0-9_]+ (upper case letters, digits, underscore)");
  return {};
}

bool is_custom_trait(std::string_view name) { return name.starts_with(kCustomPrefix); }

Status check_operator_trait_name(std::string_view name) {
  if (auto st = check_trait_name(name); !st.ok()) return st;
  if (!is_custom_trait(name) || name.size() == kCustomPrefix.size())
    return invalid_argument_error(
        "operator trait " + quote_for_error(name) +
        " is not CUSTOM_[A-Z0-9_]+: operators set only CUSTOM_ traits, e.g. CUSTOM_MAINTENANCE");
  return {};
}

Status check_agent_trait_name(std::string_view name) {
  if (auto st = check_trait_name(name); !st.ok()) return st;
  if (is_custom_trait(name))
    return invalid_argument_error("agent trait " + quote_for_error(name) +
                                  " starts with CUSTOM_: CUSTOM_ traits belong to operators");
  return {};
}

std::int64_t Inventory::free() const {
  const double capacity = std::floor(static_cast<double>(total - reserved) * allocation_ratio);
  return static_cast<std::int64_t>(capacity) - used;
}

Status check_inventory(ResourceClass rc, const Inventory& inv) {
  const std::string where = "inventory " + std::string(to_string(rc));
  constexpr std::int64_t kMaxAmount = std::int64_t{1} << 50;  // keeps (total * ratio) exact in a double
  if (inv.total < 0 || inv.reserved < 0 || inv.used < 0)
    return invalid_argument_error(where + ": negative amount (total " + std::to_string(inv.total) +
                                  ", reserved " + std::to_string(inv.reserved) + ", used " +
                                  std::to_string(inv.used) + "): amounts are >= 0");
  if (inv.total > kMaxAmount || inv.used > kMaxAmount)
    return invalid_argument_error(where + ": amount larger than 2^50: report a real capacity");
  if (inv.reserved > inv.total)
    return invalid_argument_error(where + ": reserved " + std::to_string(inv.reserved) +
                                  " is more than total " + std::to_string(inv.total));
  if (!std::isfinite(inv.allocation_ratio) || inv.allocation_ratio <= 0 || inv.allocation_ratio > 1000)
    return invalid_argument_error(where + ": allocation ratio must be a number in (0, 1000]");
  return {};
}

Status check_host_name(std::string_view name) {
  if (name.empty() || name.size() > 255)
    return invalid_argument_error("host name " + quote_for_error(name) + " must be 1 to 255 bytes");
  if (name == "." || name == "..")
    return invalid_argument_error("host name " + quote_for_error(name) +
                                  " is a path component, not a host name");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '_';
    if (!ok)
      return invalid_argument_error("host name " + quote_for_error(name) +
                                    " may contain only letters, digits, '.', '-', '_'");
  }
  return {};
}

Status check_uuid(std::string_view uuid) {
  if (!is_uuid(uuid))
    return invalid_argument_error("host uuid " + quote_for_error(uuid) +
                                  " is not a lower-case uuid (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
  return {};
}

Status check_report(const AgentReport& report) {
  if (auto st = check_host_name(report.name); !st.ok()) return st;
  if (auto st = check_uuid(report.uuid); !st.ok()) return st;
  if (report.agent_version.size() > 255) return invalid_argument_error("agent version longer than 255 bytes");
  if (report.api_url.size() > 2048) return invalid_argument_error("agent API URL longer than 2048 bytes");
  if (report.traits.size() > 10000) return invalid_argument_error("more than 10000 traits in one report");
  for (const auto& t : report.traits)
    if (auto st = check_agent_trait_name(t); !st.ok()) return st;
  for (auto rc : kAllResourceClasses) {
    const auto& inv = report.inventories[static_cast<std::size_t>(rc)];
    if (inv)
      if (auto st = check_inventory(rc, *inv); !st.ok()) return st;
  }
  if (report.seen_at_ms < 0) return invalid_argument_error("report time before 1970");
  return {};
}

}  // namespace virtcap::fleet
