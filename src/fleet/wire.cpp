#include "fleet/wire.h"

#include <cmath>
#include <limits>

namespace virtcap::fleet {

namespace {

using nlohmann::json;

// An integer field: a JSON integer that fits in int64.
Result<std::int64_t> int_field(const json& v, const std::string& where) {
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
    return invalid_argument_error(where + " is too large");
  if (!v.is_number_integer()) return invalid_argument_error(where + " must be an integer");
  return v.get<std::int64_t>();
}

Result<std::string> string_field(const json& obj, const char* key, bool required) {
  if (!obj.contains(key)) {
    if (required) return invalid_argument_error(std::string("field \"") + key + "\" is required");
    return std::string();
  }
  if (!obj[key].is_string())
    return invalid_argument_error(std::string("field \"") + key + "\" must be a string");
  auto v = obj[key].get<std::string>();
  // PostgreSQL would cut the text at a NUL and SQLite keep it: refused on both.
  if (v.find('\0') != std::string::npos)
    return invalid_argument_error(std::string("field \"") + key + "\" holds a NUL character");
  return v;
}

Result<Inventory> parse_inventory(const json& v, const std::string& where) {
  if (!v.is_object())
    return invalid_argument_error(where + " must be an object {total, reserved, allocation_ratio, used}");
  Inventory inv;
  for (const auto& [k, x] : v.items()) {
    const std::string at = where + "." + k;
    if (k == "allocation_ratio") {
      if (!x.is_number()) return invalid_argument_error(at + " must be a number");
      inv.allocation_ratio = x.get<double>();
      continue;
    }
    std::int64_t* slot = k == "total"      ? &inv.total
                         : k == "reserved" ? &inv.reserved
                         : k == "used"     ? &inv.used
                                           : nullptr;
    if (slot == nullptr)
      return invalid_argument_error("unknown field " + quote_for_error(k) + " in " + where +
                                    "; fields: total, reserved, allocation_ratio, used");
    auto n = int_field(x, at);
    if (!n.ok()) return n.error();
    *slot = *n;
  }
  return inv;
}

Result<Inventories> parse_inventories(const json& v) {
  if (!v.is_object())
    return invalid_argument_error("field \"inventories\" must be an object keyed by resource class");
  Inventories out;
  for (const auto& [k, x] : v.items()) {
    auto rc = resource_class_from_string(k);
    if (!rc.ok()) return rc.error();
    auto inv = parse_inventory(x, "inventories." + k);
    if (!inv.ok()) return inv.error();
    out[static_cast<std::size_t>(*rc)] = *inv;
  }
  return out;
}

}  // namespace

json free_json(const std::array<std::optional<std::int64_t>, kResourceClassCount>& free) {
  json out = json::object();
  for (auto rc : kAllResourceClasses)
    if (const auto& f = free[static_cast<std::size_t>(rc)]) out[std::string(to_string(rc))] = *f;
  return out;
}

json to_json(const AgentReport& r) {
  json inv = json::object();
  for (auto rc : kAllResourceClasses)
    if (const auto& i = r.inventories[static_cast<std::size_t>(rc)])
      inv[std::string(to_string(rc))] = {{"total", i->total},
                                         {"reserved", i->reserved},
                                         {"allocation_ratio", i->allocation_ratio},
                                         {"used", i->used}};
  return {{"uuid", r.uuid},
          {"traits", r.traits},
          {"inventories", inv},
          {"agent_version", r.agent_version},
          {"api_url", r.api_url}};
}

Result<ReportBody> parse_report_body(std::string_view name, const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return invalid_argument_error("malformed JSON in the request body");
  if (!j.is_object()) return invalid_argument_error("the request body must be a JSON object");
  static const char* const kFields[] = {"uuid",          "traits",  "inventories",
                                        "agent_version", "api_url", "generation"};
  for (const auto& [k, v] : j.items())
    if (std::find(std::begin(kFields), std::end(kFields), k) == std::end(kFields))
      return invalid_argument_error(
          "unknown field " + quote_for_error(k) +
          "; fields: uuid, traits, inventories, agent_version, api_url, generation");
  ReportBody out;
  out.report.name = std::string(name);
  auto uuid = string_field(j, "uuid", true);
  if (!uuid.ok()) return uuid.error();
  out.report.uuid = *uuid;
  for (auto [key, dst] :
       {std::pair{"agent_version", &out.report.agent_version}, {"api_url", &out.report.api_url}}) {
    auto s = string_field(j, key, false);
    if (!s.ok()) return s.error();
    *dst = *s;
  }
  if (!j.contains("traits") || !j["traits"].is_array())
    return invalid_argument_error("field \"traits\" is required: an array of trait names");
  for (const auto& t : j["traits"]) {
    if (!t.is_string()) return invalid_argument_error("field \"traits\" must hold only strings");
    out.report.traits.push_back(t.get<std::string>());
  }
  if (j.contains("inventories")) {
    auto inv = parse_inventories(j["inventories"]);
    if (!inv.ok()) return inv.error();
    out.report.inventories = *inv;
  }
  if (j.contains("generation")) {
    auto g = int_field(j["generation"], "field \"generation\"");
    if (!g.ok()) return g.error();
    if (*g < 0) return invalid_argument_error("field \"generation\" must be >= 0");
    out.generation = *g;
  }
  out.report.seen_at_ms = now_ms();
  if (auto st = check_report(out.report); !st.ok()) return st.error();
  return out;
}

Result<std::optional<std::int64_t>> parse_generation(const std::string& body, const std::string& if_match) {
  std::optional<std::int64_t> from_body;
  if (!body.empty()) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return invalid_argument_error("the request body must be a JSON object {\"generation\": N}");
    for (const auto& [k, v] : j.items()) {
      if (k != "generation")
        return invalid_argument_error("unknown field " + quote_for_error(k) +
                                      "; the only field is generation");
      auto g = int_field(v, "field \"generation\"");
      if (!g.ok()) return g.error();
      from_body = *g;
    }
  }
  std::optional<std::int64_t> from_header;
  if (!if_match.empty()) {
    std::string v = if_match;
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos)
      return invalid_argument_error("If-Match " + quote_for_error(if_match) +
                                    " is not a host generation (\"N\")");
    from_header = std::stoll(v);
  }
  if (from_body && from_header && *from_body != *from_header)
    return invalid_argument_error("the body's generation and the If-Match header disagree");
  if (from_body && *from_body < 0) return invalid_argument_error("field \"generation\" must be >= 0");
  return from_body ? from_body : from_header;
}

json to_json(const HostMatch& m) {
  return {{"name", m.name},
          {"uuid", m.uuid},
          {"free", free_json(m.free)},
          {"last_seen_age_s", static_cast<double>(m.last_seen_age_ms) / 1000.0}};
}

json to_json(const Exclusion& e) {
  json out = {{"reason", std::string(to_string(e.kind))}, {"message", e.describe()}};
  switch (e.kind) {
    case Exclusion::Kind::missing_required:
    case Exclusion::Kind::has_forbidden:
      out["trait"] = e.trait;
      out["trait_known"] = e.trait_known;
      break;
    case Exclusion::Kind::none_of_any_of: out["any_of"] = e.any_of; break;
    case Exclusion::Kind::not_enough_resource:
      out["resource"] = std::string(to_string(e.resource));
      out["asked"] = e.asked;
      out["free"] = e.free ? json(*e.free) : json();
      break;
    case Exclusion::Kind::down:
      out["last_seen_age_s"] = static_cast<double>(e.last_seen_age_ms) / 1000.0;
      break;
  }
  if (e.hosts > 0) out["hosts"] = e.hosts;
  return out;
}

json to_json(const Answer& a) {
  json hosts = json::array();
  for (const auto& h : a.hosts) hosts.push_back(to_json(h));
  json out = {{"matched", a.matched},
              {"hosts", hosts},
              {"hosts_total", a.hosts_total},
              {"index_generation", a.index_generation},
              {"started_from", a.started_from}};
  return out;
}

json to_json(const HostExplanation& e) {
  json reasons = json::array();
  for (const auto& r : e.reasons) reasons.push_back(to_json(r));
  return {{"host", to_json(e.host)},
          {"matches", e.matches},
          {"reasons", reasons},
          {"index_generation", e.index_generation}};
}

json to_json(const HostRecord& h, std::int64_t now, std::int64_t down_after_ms) {
  json traits = json::array();
  for (const auto& t : h.traits)
    traits.push_back({{"name", t.name}, {"owner", std::string(to_string(t.owner))}});
  json inv = json::object();
  for (auto rc : kAllResourceClasses)
    if (const auto& i = h.inventories[static_cast<std::size_t>(rc)])
      inv[std::string(to_string(rc))] = {{"total", i->total},
                                         {"reserved", i->reserved},
                                         {"allocation_ratio", i->allocation_ratio},
                                         {"used", i->used},
                                         {"free", i->free()}};
  const std::int64_t age = now - h.last_seen_ms;
  return {{"name", h.name},
          {"uuid", h.uuid},
          {"generation", h.generation},
          {"last_seen_age_s", static_cast<double>(age) / 1000.0},
          {"down", age >= down_after_ms},
          {"agent_version", h.agent_version},
          {"api_url", h.api_url},
          {"traits", traits},
          {"inventories", inv}};
}

}  // namespace virtcap::fleet
