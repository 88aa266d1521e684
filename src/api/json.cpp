#include "api/json.h"

#include <cstdint>
#include <cstdio>
#include <string_view>

#include "common/strings.h"
#include "common/utf8.h"

namespace virtcap::api {

nlohmann::json to_json(const InstanceRecord& r) {
  return {
      {"uuid", r.uuid},
      {"name", r.name},
      {"host", r.host},
      {"image", r.image_id},
      {"memory_mb", r.memory_mb},
      {"vcpus", r.vcpus},
      {"vm_state", std::string(to_string(r.vm_state))},
      {"task_state", r.task_state == TaskState::none ? nlohmann::json(nullptr)
                                                     : nlohmann::json(std::string(to_string(r.task_state)))},
      {"created_at", r.created_at},
      {"updated_at", r.updated_at},
      {"deleted_at", r.deleted_at == 0 ? nlohmann::json(nullptr) : nlohmann::json(r.deleted_at)}};
}

nlohmann::json to_json(const InterfaceInfo& i) {
  return {{"mac", i.mac},
          {"network", i.network.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.network)},
          {"tag", i.tag.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.tag)}};
}

nlohmann::json to_json(const compute::ComputeManager::InstanceView& v) {
  auto j = to_json(v.record);
  if (v.hypervisor) {
    nlohmann::json ifs = nlohmann::json::array();
    for (const auto& i : v.hypervisor->interfaces) ifs.push_back(to_json(i));
    j["power_state"] = std::string(to_string(v.hypervisor->power_state));
    j["interfaces"] = ifs;
  } else {
    j["power_state"] = nullptr;
    j["interfaces"] = nlohmann::json::array();
  }
  return j;
}

nlohmann::json to_json(const compute::TaskStatus& t) {
  nlohmann::json j = {{"name", t.name},
                      {"spacing_seconds", t.spacing_seconds},
                      {"enabled", t.enabled},
                      {"disabled_reason", t.disabled_reason.empty() ? nlohmann::json(nullptr)
                                                                    : nlohmann::json(t.disabled_reason)},
                      {"runs", t.runs},
                      {"last_run", nullptr},
                      {"last_duration_seconds", nullptr},
                      {"last_result", nullptr},
                      {"last_message", nullptr}};
  if (t.last_started) {
    j["last_run"] =
        std::chrono::duration_cast<std::chrono::seconds>(t.last_started->time_since_epoch()).count();
    j["last_duration_seconds"] = t.last_duration.count();
  }
  if (t.last_outcome) {
    j["last_result"] = std::string(compute::to_string(t.last_outcome->kind));
    j["last_message"] = t.last_outcome->message;
  }
  return j;
}

nlohmann::json to_json(const compute::ComputeManager::ReconcileReport& r) {
  return {{"consistent", r.consistent()},
          {"finished_spawns", r.finished_spawns},
          {"rolled_back_spawns", r.rolled_back_spawns},
          {"finished_deletes", r.finished_deletes},
          {"lost", r.lost},
          {"unknown_domains", r.unknown_domains},
          {"orphan_dirs", r.orphan_dirs}};
}

nlohmann::json to_json(const ImageListing& l) {
  auto text_or_null = [](const std::string& v) {
    return v.empty() ? nlohmann::json() : nlohmann::json(utf8_safe(v));
  };
  nlohmann::json images = nlohmann::json::array();
  for (const auto& i : l.images)
    images.push_back({{"file", utf8_safe(i.file)},
                      {"id", text_or_null(i.id)},
                      {"format", text_or_null(i.format)},
                      {"virtual_size", i.virtual_size ? nlohmann::json(i.virtual_size) : nlohmann::json()},
                      {"file_size", i.file_size},
                      {"base_cached", i.base_cached},
                      {"problem", text_or_null(i.problem)}});
  return {{"repository", text_or_null(l.repository)}, {"images", images}};
}

namespace {

using json = nlohmann::json;

// The request body as a JSON object, with only `allowed` fields.
Result<json> body_object(const std::string& body, const std::vector<std::string>& allowed, bool empty_ok) {
  if (body.empty()) {
    if (empty_ok) return json::object();
    return invalid_argument_error("request body is empty; expected a JSON object");
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return invalid_argument_error("malformed JSON in the request body");
  if (!j.is_object()) return invalid_argument_error("the request body must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      return invalid_argument_error("unknown field '" + k + "'; allowed fields: " + join(allowed));
    }
  }
  return j;
}

Result<std::string> string_field(const json& j, const std::string& key, bool required,
                                 const std::string& def = "") {
  if (!j.contains(key)) {
    if (required) return invalid_argument_error("field '" + key + "' is required");
    return def;
  }
  if (!j[key].is_string()) return invalid_argument_error("field '" + key + "' must be a string");
  return j[key].get<std::string>();
}

// Any JSON integer (one past int64 is the int64 maximum: out of every range).
Result<std::int64_t> integer_field(const json& j, const std::string& key, std::int64_t def) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number_integer()) return invalid_argument_error("field '" + key + "' must be an integer");
  if (j[key].is_number_unsigned() && j[key].get<std::uint64_t>() > std::uint64_t(INT64_MAX)) return INT64_MAX;
  return j[key].get<std::int64_t>();
}

Result<int> int_field(const json& j, const std::string& key, int def, int lo, int hi) {
  auto v = integer_field(j, key, def);
  if (!v.ok()) return v.error();
  if (*v < lo || *v > hi)
    return invalid_argument_error("field '" + key + "' must be from " + std::to_string(lo) + " to " +
                                  std::to_string(hi));
  return static_cast<int>(*v);
}

}  // namespace

Result<BootRequest> parse_boot_request(const std::string& body) {
  auto j = body_object(body, {"name", "image", "memory_mb", "vcpus"}, false);
  if (!j.ok()) return j.error();
  BootRequest r;
  auto name = string_field(*j, "name", true);
  if (!name.ok()) return name.error();
  auto image = string_field(*j, "image", true);
  if (!image.ok()) return image.error();
  auto mem = int_field(*j, "memory_mb", 512, compute::kMinMemoryMb, compute::kMaxMemoryMb);
  if (!mem.ok()) return mem.error();
  // Its one range, 1 to the driver's discovered max_vcpus, is the manager's.
  auto vcpus = integer_field(*j, "vcpus", 1);
  if (!vcpus.ok()) return vcpus.error();
  r.name = *name;
  r.image = *image;
  r.memory_mb = *mem;
  r.vcpus = *vcpus;
  return r;
}

namespace {
// Six two-digit hex groups (either case) joined by ':', as 52:54:00:12:34:56.
bool is_mac_address(std::string_view s) {
  if (s.size() != 17) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok =
        i % 3 == 2 ? c == ':' : (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!ok) return false;
  }
  return true;
}
}  // namespace

Result<InterfaceSpec> parse_interface_request(const std::string& body) {
  auto j = body_object(body, {"mac", "network", "tag"}, true);
  if (!j.ok()) return j.error();
  InterfaceSpec spec;
  auto mac = string_field(*j, "mac", false);
  if (!mac.ok()) return mac.error();
  auto network = string_field(*j, "network", false);
  if (!network.ok()) return network.error();
  auto tag = string_field(*j, "tag", false);
  if (!tag.ok()) return tag.error();
  if (!mac->empty() && !is_mac_address(*mac))
    return invalid_argument_error("field 'mac' must look like 52:54:00:12:34:56");
  spec.mac = *mac;
  spec.network = *network;
  spec.tag = *tag;
  return spec;
}

Result<PassRequest> parse_pass_request(const std::string& body) {
  auto j = body_object(body, {"dry_run"}, true);
  if (!j.ok()) return j.error();
  PassRequest pass;
  if (!j->contains("dry_run")) return pass;
  if (!(*j)["dry_run"].is_boolean()) return invalid_argument_error("field 'dry_run' must be a boolean");
  pass.dry_run = (*j)["dry_run"].get<bool>();
  return pass;
}

Status parse_empty_request(const std::string& body) {
  auto j = body_object(body, {}, true);
  if (!j.ok()) return j.error();
  return {};
}

}  // namespace virtcap::api
