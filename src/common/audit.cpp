#include "common/audit.h"

#include <cstdio>

#include "common/json_text.h"
#include "common/utf8.h"

namespace virtcap::audit {

namespace {

// A value from a request (an instance name or id as typed) in at most
// 256 bytes, so a huge one cannot flood the log.
std::string clip(std::string v) {
  constexpr std::size_t kMax = 256;
  if (v.size() > kMax) v = v.substr(0, kMax) + "...(" + std::to_string(v.size()) + " bytes)";
  return v;
}

// key=value; a string is quoted when it is empty or has a space, a quote, an
// '=' or a control character, which is escaped (\n, \xNN): one value can
// never end the line or forge another pair.
std::string pair_text(const std::string& key, const nlohmann::json& v) {
  if (!v.is_string()) return key + "=" + dump_json(v);
  const std::string s = utf8_safe(v.get<std::string>());
  bool quote = s.empty();
  std::string q;
  for (unsigned char c : s) {
    quote = quote || c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f;
    if (c == '"' || c == '\\') {
      q += '\\';
      q += static_cast<char>(c);
    } else if (c == '\n') {
      q += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      q += hex;
    } else {
      q += static_cast<char>(c);
    }
  }
  return key + "=" + (quote ? "\"" + q + "\"" : q);
}

}  // namespace

Scope::Scope(std::string_view operation, std::string uuid, std::string name)
    : operation_(operation),
      uuid_(clip(std::move(uuid))),
      name_(clip(std::move(name))),
      start_(std::chrono::steady_clock::now()) {}

Scope::~Scope() {
  if (!logged_) failed("ended without an outcome (an exception)");
}

void Scope::instance(std::string uuid, std::string name) {
  uuid_ = clip(std::move(uuid));
  name_ = clip(std::move(name));
}

void Scope::field(std::string key, nlohmann::json value) {
  extra_.emplace_back(std::move(key), std::move(value));
}

void Scope::log(std::string_view outcome, const std::string& reason) {
  if (logged_) return;
  logged_ = true;
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_)
          .count();
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
