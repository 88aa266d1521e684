// The instance store interface. The manager is its only user; drivers never
// see it.
#pragma once

#include <string>
#include <vector>

#include "virtcap/error.h"
#include "virtcap/instance.h"

namespace virtcap {

class InstanceStore {
 public:
  virtual ~InstanceStore() = default;

  virtual Status register_host(const HostRecord& host) = 0;
  // Every registered host whose instances path is `instances_path`.
  virtual Result<std::vector<std::string>> hosts_sharing(const std::string& instances_path) = 0;
  // The live (not deleted) instances of the given hosts.
  virtual Result<std::vector<InstanceRecord>> live_instances_on(const std::vector<std::string>& hosts) = 0;

  // Fails with already_exists if the uuid is taken, or if a live instance of
  // the same host already has this name.
  virtual Status create_instance(const InstanceRecord& record) = 0;
  // not_found if there is no such uuid (deleted instances are still found).
  virtual Result<InstanceRecord> get_instance(const std::string& uuid) = 0;
  // Replaces every field of the record with this uuid; not_found if none.
  virtual Status update_instance(const InstanceRecord& record) = 0;
  // The instances of `host`, oldest first; deleted ones only if asked.
  virtual Result<std::vector<InstanceRecord>> list_instances(const std::string& host, bool include_deleted) = 0;
};

}  // namespace virtcap
