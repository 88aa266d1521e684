#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace virtcap {

// An instance's lifecycle state, as the manager writes it. Strings only at
// the edges (JSON, SQL): to_string / vm_state_from_string.
// clang-format off
#define VIRTCAP_VM_STATES(X) \
  X(building)  /* the record exists; the spawn is under way */          \
  X(active)    /* spawned, and the hypervisor has it */                  \
  X(error)     /* a failed or interrupted spawn */                       \
  X(lost)      /* active, but the hypervisor no longer has it */         \
  X(deleted)   /* soft-deleted: the row stays, deleted_at is set */
// clang-format on

#define VIRTCAP_STATE_ENUM_(name) name,
enum class VmState { VIRTCAP_VM_STATES(VIRTCAP_STATE_ENUM_) };
#undef VIRTCAP_STATE_ENUM_

#define VIRTCAP_STATE_VALUE_(name) VmState::name,
inline constexpr VmState kAllVmStates[] = {VIRTCAP_VM_STATES(VIRTCAP_STATE_VALUE_)};
#undef VIRTCAP_STATE_VALUE_

// The operation in progress on an instance: none when idle ("" in the store,
// null in JSON).
enum class TaskState { none, spawning, deleting };
inline constexpr TaskState kAllTaskStates[] = {TaskState::none, TaskState::spawning, TaskState::deleting};

constexpr std::string_view to_string(VmState s) {
  switch (s) {
#define VIRTCAP_STATE_CASE_(name) \
  case VmState::name: return #name;
    VIRTCAP_VM_STATES(VIRTCAP_STATE_CASE_)
#undef VIRTCAP_STATE_CASE_
  }
  return "?";
}

constexpr std::string_view to_string(TaskState s) {
  switch (s) {
    case TaskState::none: return "";
    case TaskState::spawning: return "spawning";
    case TaskState::deleting: return "deleting";
  }
  return "?";
}

constexpr std::optional<VmState> vm_state_from_string(std::string_view s) {
  for (VmState v : kAllVmStates)
    if (to_string(v) == s) return v;
  return std::nullopt;
}

constexpr std::optional<TaskState> task_state_from_string(std::string_view s) {
  for (TaskState t : kAllTaskStates)
    if (to_string(t) == s) return t;
  return std::nullopt;
}

// One instance as the instance store records it.
struct InstanceRecord {
  std::string uuid;
  std::string name;
  std::string host;
  std::string image_id;
  int memory_mb = 0;
  int vcpus = 0;
  VmState vm_state = VmState::building;
  TaskState task_state = TaskState::none;
  std::int64_t created_at = 0;  // unix seconds
  std::int64_t updated_at = 0;
  std::int64_t deleted_at = 0;  // 0 while live
};

// A compute host as registered in the store, with the instances path it uses.
struct HostRecord {
  std::string host;
  std::string instances_path;
  std::int64_t updated_at = 0;
};

}  // namespace virtcap
