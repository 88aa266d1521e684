#include "api/json.h"

namespace virtcap::api {

nlohmann::json to_json(const InstanceRecord& r) {
  return {{"uuid", r.uuid},           {"name", r.name},
          {"host", r.host},           {"image", r.image_id},
          {"memory_mb", r.memory_mb}, {"vcpus", r.vcpus},
          {"vm_state", r.vm_state},   {"task_state", r.task_state.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.task_state)},
          {"created_at", r.created_at}, {"updated_at", r.updated_at},
          {"deleted_at", r.deleted_at == 0 ? nlohmann::json(nullptr) : nlohmann::json(r.deleted_at)}};
}

nlohmann::json to_json(const InterfaceInfo& i) {
  return {{"mac", i.mac}, {"network", i.network.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.network)},
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
                      {"disabled_reason", t.disabled_reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.disabled_reason)},
                      {"runs", t.runs},
                      {"last_run", nullptr},
                      {"last_duration_seconds", nullptr},
                      {"last_result", nullptr},
                      {"last_message", nullptr}};
  if (t.last_started) {
    j["last_run"] = std::chrono::duration_cast<std::chrono::seconds>(t.last_started->time_since_epoch()).count();
    j["last_duration_seconds"] = t.last_duration.count();
  }
  if (t.last_outcome) {
    j["last_result"] = std::string(compute::to_string(t.last_outcome->kind));
    j["last_message"] = t.last_outcome->message;
  }
  return j;
}

nlohmann::json to_json(const compute::ComputeManager::ReconcileReport& r) {
  return {{"consistent", r.consistent()},       {"finished_spawns", r.finished_spawns},
          {"rolled_back_spawns", r.rolled_back_spawns}, {"finished_deletes", r.finished_deletes},
          {"lost", r.lost},                     {"unknown_domains", r.unknown_domains},
          {"orphan_dirs", r.orphan_dirs}};
}

nlohmann::json error_json(const Error& e) {
  nlohmann::json err = {{"code", std::string(to_string(e.code))}, {"message", e.message}};
  if (!e.capability.empty()) err["capability"] = e.capability;
  if (!e.operation.empty()) err["operation"] = e.operation;
  if (!e.driver.empty()) err["driver"] = e.driver;
  return {{"error", err}};
}

int http_status(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return 400;
    case Errc::not_found: return 404;
    case Errc::already_exists:
    case Errc::conflict:
    case Errc::capability_not_supported: return 409;
    case Errc::hypervisor_unavailable: return 503;
    default: return 500;
  }
}

}  // namespace virtcap::api
