#include "common/audit.h"

#include "common/json_text.h"
#include "common/utf8.h"

namespace virtcap::audit {

namespace {

// key=value, quoted when the value has a space, a quote or is empty.
std::string pair_text(const std::string& key, const nlohmann::json& v) {
  std::string s = v.is_string() ? utf8_safe(v.get<std::string>()) : dump_json(v);
  if (v.is_string() && (s.empty() || s.find_first_of(" \"=") != std::string::npos)) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\\\"") : std::string(1, c);
    s = q + "\"";
  }
  return key + "=" + s;
}

}  // namespace

Scope::Scope(std::string_view operation, std::string uuid, std::string name)
    : operation_(operation), uuid_(std::move(uuid)), name_(std::move(name)), start_(std::chrono::steady_clock::now()) {}

Scope::~Scope() {
  if (!logged_) failed("ended without an outcome (an exception)");
}

void Scope::instance(std::string uuid, std::string name) {
  uuid_ = std::move(uuid);
  name_ = std::move(name);
}

void Scope::field(std::string key, nlohmann::json value) { extra_.emplace_back(std::move(key), std::move(value)); }

void Scope::log(std::string_view outcome, const std::string& reason) {
  if (logged_) return;
  logged_ = true;
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_).count();
  logging::Fields f = {{"audit", true},
                       {"operation", operation_},
                       {"uuid", uuid_.empty() ? nlohmann::json() : nlohmann::json(uuid_)},
                       {"name", name_.empty() ? nlohmann::json() : nlohmann::json(name_)},
                       {"outcome", std::string(outcome)},
                       {"duration_ms", static_cast<long long>(ms)}};
  if (!reason.empty()) f.emplace_back("reason", reason);
  f.insert(f.end(), extra_.begin(), extra_.end());
  std::string msg = "audit";
  for (const auto& [k, v] : f)
    if (k != "audit" && !v.is_null()) msg += " " + pair_text(k, v);
  logging::info(msg, f);
}

}  // namespace virtcap::audit
