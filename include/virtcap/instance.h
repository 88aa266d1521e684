#pragma once

#include <cstdint>
#include <string>

namespace virtcap {

// One instance as the instance store records it.
struct InstanceRecord {
  std::string uuid;
  std::string name;
  std::string host;
  std::string image_id;
  int memory_mb = 0;
  int vcpus = 0;
  std::string vm_state = "building";  // building, active, error, deleted, lost
  std::string task_state;             // "" when idle; spawning, deleting, rebooting
  std::int64_t created_at = 0;        // unix seconds
  std::int64_t updated_at = 0;
  std::int64_t deleted_at = 0;        // 0 while live
};

// A compute host as registered in the store, with the instances path it uses.
struct HostRecord {
  std::string host;
  std::string instances_path;
  std::int64_t updated_at = 0;
};

}  // namespace virtcap
