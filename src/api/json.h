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
// {"repository": path|null, "images": [{file, id, format, virtual_size,
// file_size, base_cached, problem}]} (docs/api.md); names from disk are
// escaped to valid UTF-8 (U+FFFD).
nlohmann::json to_json(const ImageListing& l);

// Request bodies: untrusted bytes, parsed and validated here (fuzzed by
// tests/fuzz/api_body_fuzz.cpp). Unknown fields, wrong types and
// out-of-range values are invalid_argument with a message naming the field.
struct BootRequest {
  std::string name, image;
  int memory_mb = 512;
  std::int64_t vcpus = 1;  // range-checked by the manager (the driver's max_vcpus)
};
Result<BootRequest> parse_boot_request(const std::string& body);
Result<InterfaceSpec> parse_interface_request(const std::string& body);
// POST /v1/image-cache/pass's body.
struct PassRequest {
  bool dry_run = false;
};
Result<PassRequest> parse_pass_request(const std::string& body);
Status parse_empty_request(const std::string& body);

}  // namespace virtcap::api
