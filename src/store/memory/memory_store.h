// An in-memory InstanceStore: used by tests, benchmarks and `--store memory`.
#pragma once

#include <map>

#include "common/mutex.h"
#include "virtcap/store.h"

namespace virtcap::store {

class MemoryStore : public InstanceStore {
 public:
  Status register_host(const HostRecord& host) override;
  Result<std::vector<std::string>> hosts_sharing(const std::string& instances_path) override;
  Result<std::vector<InstanceRecord>> live_instances_on(const std::vector<std::string>& hosts) override;
  Status create_instance(const InstanceRecord& record) override;
  Result<InstanceRecord> get_instance(const std::string& uuid) override;
  Status update_instance(const InstanceRecord& record) override;
  Result<std::vector<InstanceRecord>> list_instances(const std::string& host, bool include_deleted) override;
  // Pages over the records in place (no copies), under the store's lock.
  Result<InstancePageInfo> visit_instances(const InstancePageQuery& query,
                                           const InstanceVisitor& visit) override;
  // own_writes counts every successful write; there are no other writers.
  std::optional<ContentsVersion> contents_version() override;

 private:
  Mutex mu_;
  std::uint64_t writes_ GUARDED_BY(mu_) = 0;  // bumped with the change it counts
  std::map<std::string, HostRecord> hosts_ GUARDED_BY(mu_);
  std::map<std::string, InstanceRecord> instances_ GUARDED_BY(mu_);
};

}  // namespace virtcap::store
