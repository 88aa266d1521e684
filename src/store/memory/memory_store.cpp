#include "store/memory/memory_store.h"

#include <algorithm>

namespace virtcap::store {

Status MemoryStore::register_host(const HostRecord& host) {
  MutexLock lock(mu_);
  hosts_[host.host] = host;
  ++writes_;
  return {};
}

Result<std::vector<std::string>> MemoryStore::hosts_sharing(const std::string& instances_path) {
  MutexLock lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, h] : hosts_)
    if (h.instances_path == instances_path) out.push_back(name);
  return out;
}

Result<std::vector<InstanceRecord>> MemoryStore::live_instances_on(const std::vector<std::string>& hosts) {
  MutexLock lock(mu_);
  std::vector<InstanceRecord> out;
  for (const auto& [uuid, r] : instances_)
    if (r.deleted_at == 0 && std::find(hosts.begin(), hosts.end(), r.host) != hosts.end()) out.push_back(r);
  return out;
}

Status MemoryStore::create_instance(const InstanceRecord& record) {
  MutexLock lock(mu_);
  for (const auto& [uuid, r] : instances_)
    if (r.deleted_at == 0 && record.deleted_at == 0 && r.host == record.host && r.name == record.name)
      return make_error(Errc::already_exists, "host " + record.host + " already has a live instance named '" +
                                                  record.name + "' (" + uuid + ")");
  if (!instances_.emplace(record.uuid, record).second)
    return make_error(Errc::already_exists, "instance " + record.uuid + " is already in the store");
  ++writes_;
  return {};
}

Result<InstanceRecord> MemoryStore::get_instance(const std::string& uuid) {
  MutexLock lock(mu_);
  auto it = instances_.find(uuid);
  if (it == instances_.end()) return make_error(Errc::not_found, "no instance " + uuid + " in the store");
  return it->second;
}

Status MemoryStore::update_instance(const InstanceRecord& record) {
  MutexLock lock(mu_);
  auto it = instances_.find(record.uuid);
  if (it == instances_.end())
    return make_error(Errc::not_found, "no instance " + record.uuid + " in the store");
  it->second = record;
  ++writes_;
  return {};
}

Result<std::vector<InstanceRecord>> MemoryStore::list_instances(const std::string& host,
                                                                bool include_deleted) {
  MutexLock lock(mu_);
  std::vector<InstanceRecord> out;
  out.reserve(instances_.size());
  for (const auto& [uuid, r] : instances_)
    if (r.host == host && (include_deleted || r.deleted_at == 0)) out.push_back(r);
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.created_at < b.created_at; });
  return out;
}

Result<InstancePageInfo> MemoryStore::visit_instances(const InstancePageQuery& query,
                                                      const InstanceVisitor& visit) {
  MutexLock lock(mu_);
  std::vector<const InstanceRecord*> rows;
  rows.reserve(instances_.size());
  for (const auto& [uuid, r] : instances_)
    if (r.host == query.host) rows.push_back(&r);
  return visit_records(std::move(rows), query, visit);
}

std::optional<ContentsVersion> MemoryStore::contents_version() {
  MutexLock lock(mu_);
  return ContentsVersion{writes_, 0};
}

}  // namespace virtcap::store
