// JSON shapes shared by the API server and its client.
#pragma once

#include <nlohmann/json.hpp>

#include "compute/manager.h"
#include "compute/periodic.h"
#include "virtcap/error.h"

namespace virtcap::api {

nlohmann::json to_json(const InstanceRecord& r);
nlohmann::json to_json(const compute::ComputeManager::InstanceView& v);
nlohmann::json to_json(const InterfaceInfo& i);
nlohmann::json to_json(const compute::TaskStatus& t);
nlohmann::json to_json(const compute::ComputeManager::ReconcileReport& r);
// {"error": {"code", "message", ["capability", "operation", "driver"]}}
nlohmann::json error_json(const Error& e);
// The HTTP status for an error code (docs/api.md).
int http_status(Errc code);

}  // namespace virtcap::api
