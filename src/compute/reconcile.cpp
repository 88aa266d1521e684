// ComputeManager::reconcile: the instance store against the hypervisor and
// the instance directories, after a crash or on GET /v1/reconcile.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>

#include "common/time.h"
#include "common/uuid.h"
#include "compute/manager.h"

namespace virtcap::compute {

namespace {

// Instance directories under instances_path whose uuid no store record of any
// host names, or names only as deleted from this host with nothing left to do.
std::vector<std::string> orphan_dirs(InstanceStore& store, const std::string& instances_path,
                                     const std::string& host) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(instances_path, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_directory() || !is_uuid(name)) continue;
    auto rec = store.get_instance(name);
    if (!rec.ok()) {
      if (rec.error().code == Errc::not_found) out.push_back(name);
      continue;
    }
    if (rec->deleted_at != 0 && rec->host == host && rec->task_state == TaskState::none) out.push_back(name);
  }
  return out;
}

// The domains on the hypervisor, and those of them a spawn got as far as
// starting: start is a spawn's last step, so a domain that is shut off (or
// whose state is unknown) was defined by a spawn that never got that far.
template <class Domains>
std::pair<std::set<std::string>, std::set<std::string>> on_hypervisor(const Domains& domains) {
  std::set<std::string> uuids, started;
  for (const auto& i : domains) {
    uuids.insert(i.uuid);
    if (i.power_state != PowerState::shutdown && i.power_state != PowerState::nostate) started.insert(i.uuid);
  }
  return {std::move(uuids), std::move(started)};
}

// "active", or "active/spawning" while a task runs.
std::string state_text(const InstanceRecord& rec) {
  return std::string(to_string(rec.vm_state)) +
         (rec.task_state == TaskState::none ? "" : "/" + std::string(to_string(rec.task_state)));
}

}  // namespace

Result<ComputeManager::ReconcileReport> ComputeManager::reconcile(bool fix, std::stop_token stop) {
  if (auto why = driver_->unavailable_reason(); !why.empty())
    return make_error(Errc::hypervisor_unavailable, why);
  auto on_hv = driver_->list_instances();
  if (!on_hv.ok()) return on_hv.error();
  auto in_store = store_.list_instances(host_, true);
  if (!in_store.ok()) return in_store.error();
  const auto [hv_uuids, started] = on_hypervisor(on_hv.value());
  std::set<std::string> known;
  ReconcileReport out;
  for (auto rec : in_store.value()) {
    if (stop.stop_requested()) {
      out.interrupted = true;
      return out;
    }
    known.insert(rec.uuid);
    auto lock = instance_lock(rec.uuid);
    if (!lock->try_lock()) continue;  // an operation is running on it right now
    MutexLock guard(*lock, std::adopt_lock);
    const bool on = hv_uuids.count(rec.uuid) > 0;
    const auto stamp = [&] { rec.updated_at = now_seconds(); };
    // A fix is audited: the instance, its state before and after.
    audit::Scope audit("reconcile", rec.uuid, rec.name);
    audit.field("from", state_text(rec));
    if (!fix) audit.dismiss();
    if (rec.task_state == TaskState::spawning) {
      if (started.count(rec.uuid) > 0) {
        out.finished_spawns.push_back(rec.uuid);
        rec.vm_state = VmState::active;
      } else {
        out.rolled_back_spawns.push_back(rec.uuid);
        if (fix)
          if (auto st = driver_->destroy(rec.uuid); !st.ok())
            return audit.fail(st.error());  // removes a half-made disk
        rec.vm_state = VmState::error;
      }
      rec.task_state = TaskState::none;
    } else if (rec.task_state == TaskState::deleting || (rec.deleted_at != 0 && on)) {
      out.finished_deletes.push_back(rec.uuid);
      if (fix)
        if (auto st = driver_->destroy(rec.uuid); !st.ok()) return audit.fail(st.error());
      rec.task_state = TaskState::none;
      rec.vm_state = VmState::deleted;
      if (rec.deleted_at == 0) rec.deleted_at = now_seconds();
    } else if (rec.deleted_at == 0 && rec.vm_state == VmState::active && !on) {
      out.lost.push_back(rec.uuid);
      rec.vm_state = VmState::lost;
    } else if (rec.deleted_at == 0 && rec.vm_state == VmState::lost && on) {
      rec.vm_state = VmState::active;  // it came back
    } else {
      audit.dismiss();  // nothing to fix
      continue;
    }
    stamp();
    audit.field("to", std::string(to_string(rec.vm_state)));
    if (fix)
      if (auto st = store_.update_instance(rec); !st.ok()) return audit.fail(st.error());
    audit.ok();
  }
  for (const auto& u : hv_uuids)
    if (!known.count(u)) out.unknown_domains.push_back(u);
  if (stop.stop_requested()) {
    out.interrupted = true;
    return out;
  }
  out.orphan_dirs = orphan_dirs(store_, instances_path_, host_);
  for (const auto& u : out.unknown_domains)
    spdlog::warn("reconcile: domain {} runs on the hypervisor but is not in the instance store; left alone",
                 u);
  for (const auto& d : out.orphan_dirs)
    spdlog::warn("reconcile: instance directory {}/{} has no live instance in the store; kept",
                 instances_path_, d);
  return out;
}

}  // namespace virtcap::compute
