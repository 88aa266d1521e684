// ComputeManager::reconcile: the instance store against the hypervisor and
// the instance directories, after a crash or on GET /v1/reconcile.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>
#include <set>

#include "compute/manager.h"
#include "compute/manager_detail.h"

namespace virtcap::compute {

using detail::looks_like_uuid;
using detail::now_seconds;

Result<ComputeManager::ReconcileReport> ComputeManager::reconcile(bool fix) {
  if (auto why = driver_->unavailable_reason(); !why.empty()) return make_error(Errc::hypervisor_unavailable, why);
  auto on_hv = driver_->list_instances();
  if (!on_hv) return on_hv.error();
  auto in_store = store_.list_instances(host_, true);
  if (!in_store) return in_store.error();
  std::set<std::string> hv_uuids, started;
  for (const auto& i : on_hv.value()) {
    hv_uuids.insert(i.uuid);
    // Start is a spawn's last step: a domain that is shut off (or whose
    // state is unknown) was defined by a spawn that never got that far.
    if (i.power_state != PowerState::shutdown && i.power_state != PowerState::nostate) started.insert(i.uuid);
  }
  std::set<std::string> known;
  ReconcileReport out;
  for (auto rec : in_store.value()) {
    known.insert(rec.uuid);
    auto lock = instance_lock(rec.uuid);
    std::unique_lock guard(*lock, std::try_to_lock);
    if (!guard.owns_lock()) continue;  // an operation is running on it right now
    const bool on = hv_uuids.count(rec.uuid) > 0;
    const auto stamp = [&] { rec.updated_at = now_seconds(); };
    // A fix is audited: the instance, its state before and after.
    audit::Scope audit("reconcile", rec.uuid, rec.name);
    audit.field("from", rec.vm_state + (rec.task_state.empty() ? "" : "/" + rec.task_state));
    if (!fix) audit.dismiss();
    if (rec.task_state == "spawning") {
      if (started.count(rec.uuid) > 0) {
        out.finished_spawns.push_back(rec.uuid);
        rec.vm_state = "active";
      } else {
        out.rolled_back_spawns.push_back(rec.uuid);
        if (fix)
          if (auto st = driver_->destroy(rec.uuid); !st) return audit.fail(st.error());  // removes a half-made disk
        rec.vm_state = "error";
      }
      rec.task_state.clear();
    } else if (rec.task_state == "deleting" || (rec.deleted_at != 0 && on)) {
      out.finished_deletes.push_back(rec.uuid);
      if (fix)
        if (auto st = driver_->destroy(rec.uuid); !st) return audit.fail(st.error());
      rec.task_state.clear();
      rec.vm_state = "deleted";
      if (rec.deleted_at == 0) rec.deleted_at = now_seconds();
    } else if (rec.deleted_at == 0 && rec.vm_state == "active" && !on) {
      out.lost.push_back(rec.uuid);
      rec.vm_state = "lost";
    } else if (rec.deleted_at == 0 && rec.vm_state == "lost" && on) {
      rec.vm_state = "active";  // it came back
    } else {
      audit.dismiss();  // nothing to fix
      continue;
    }
    stamp();
    audit.field("to", rec.vm_state);
    if (fix)
      if (auto st = store_.update_instance(rec); !st) return audit.fail(st.error());
    audit.ok();
  }
  for (const auto& u : hv_uuids)
    if (!known.count(u)) out.unknown_domains.push_back(u);
  // Instance directories whose uuid no store record of any host names.
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(instances_path_, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_directory() || !looks_like_uuid(name)) continue;
    auto rec = store_.get_instance(name);
    if (!rec) {
      if (rec.error().code == Errc::not_found) out.orphan_dirs.push_back(name);
      continue;
    }
    if (rec->deleted_at != 0 && rec->host == host_ && rec->task_state.empty()) out.orphan_dirs.push_back(name);
  }
  for (const auto& u : out.unknown_domains)
    spdlog::warn("reconcile: domain {} runs on the hypervisor but is not in the instance store; left alone", u);
  for (const auto& d : out.orphan_dirs)
    spdlog::warn("reconcile: instance directory {}/{} has no live instance in the store; kept", instances_path_, d);
  return out;
}

}  // namespace virtcap::compute
