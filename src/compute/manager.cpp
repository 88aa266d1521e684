#include "compute/manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>
#include <random>
#include <set>

#include "common/time.h"
#include "common/uuid.h"
#include "imagecache/host_registry.h"
#include "virt/registry.h"

namespace virtcap::compute {

std::string new_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::uint64_t a = rng(), b = rng();
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0x0fff),
                static_cast<unsigned>(((b >> 48) & 0x3fff) | 0x8000),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

namespace {

constexpr std::string_view kStopping = "the agent is stopping";

Error load_failure(const std::string& driver, const std::string& why) {
  Error e = make_error(Errc::driver_load_failed, "unable to load the virtualization driver '" + driver +
                                                     "': " + why +
                                                     "; available drivers: " + available_driver_names());
  e.driver = driver;
  return e;
}

}  // namespace

namespace {

Result<std::unique_ptr<ComputeDriver>> load_driver(const config::Config& cfg,
                                                   const std::string& driver_override) {
  const std::string name = driver_override.empty() ? cfg.compute.driver : driver_override;
  auto driver = make_driver(name, cfg);
  if (!driver.ok()) {
    Error e = driver.error();
    e.message = "unable to load the virtualization driver: " + e.message;
    return e;
  }
  return driver;
}

}  // namespace

Result<std::unique_ptr<ComputeManager>> ComputeManager::create(const config::Config& cfg,
                                                               InstanceStore& store,
                                                               const std::string& driver_override) {
  auto driver = load_driver(cfg, driver_override);
  if (!driver.ok()) return driver.error();
  return create(cfg, store, std::move(driver.value()));
}

Result<std::pair<std::string, Capabilities>> ComputeManager::inspect(const config::Config& cfg,
                                                                     const std::string& driver_override) {
  auto driver = load_driver(cfg, driver_override);
  if (!driver.ok()) return driver.error();
  const std::string name(driver.value()->name());
  if (auto st = driver.value()->init_host(cfg.host()); !st.ok())
    return load_failure(name, st.error().message);
  return std::make_pair(name, driver.value()->capabilities());
}

Result<std::unique_ptr<ComputeManager>> ComputeManager::create(const config::Config& cfg,
                                                               InstanceStore& store,
                                                               std::unique_ptr<ComputeDriver> driver) {
  const std::string name(driver->name());
  if (auto st = driver->init_host(cfg.host()); !st.ok()) return load_failure(name, st.error().message);
  return std::unique_ptr<ComputeManager>(new ComputeManager(cfg, store, std::move(driver)));
}

ComputeManager::ComputeManager(const config::Config& cfg, InstanceStore& store,
                               std::unique_ptr<ComputeDriver> driver)
    : cfg_(cfg),
      store_(store),
      driver_(std::move(driver)),
      caps_(driver_->capabilities()),
      host_(cfg.host()),
      instances_path_(cfg.instances_path()),
      fleet_reporter_(std::make_unique<FleetReporter>(*this)) {
  if (auto st = store_.register_host({host_, instances_path_, now_seconds()}); !st.ok())
    spdlog::warn("could not register host {} in the instance store: {}", host_, st.error().describe());
  if (allows(Operation::manage_image_cache))
    if (auto st = imagecache::register_host(instances_path_, host_); !st.ok())
      spdlog::warn("could not register host {} on the shared storage: {}", host_, st.error().describe());
  spdlog::info("driver '{}' loaded on host '{}'; has_imagecache={}", driver_->name(), host_,
               caps_.has_imagecache);
}

Status ComputeManager::refuse(const Requirement& r) const {
  Error e = make_error(Errc::capability_not_supported,
                       "operation '" + std::string(r.operation) + "' needs capability '" +
                           std::string(r.capability_name) + "', which driver '" +
                           std::string(driver_->name()) + "' does not declare");
  e.operation = r.operation;
  e.capability = r.capability_name;
  e.driver = driver_->name();
  return e;
}

std::string ComputeManager::undeclared(Operation op) const {
  return "driver '" + std::string(driver_->name()) + "' does not declare capability " +
         std::string(requirement(op).capability_name);
}

Status ComputeManager::check(Operation op) const {
  if (!allows(op)) return refuse(requirement(op));
  return {};
}

bool ComputeManager::allows(Operation op) const {
  const Requirement& r = requirement(op);
  return r.capability == nullptr || caps_.*(r.capability);
}

int ComputeManager::limit(Operation op) const {
  const Requirement& r = requirement(op);
  return r.limit == nullptr ? 0 : caps_.*(r.limit);
}

std::shared_ptr<Mutex> ComputeManager::instance_lock(const std::string& uuid) {
  MutexLock lock(locks_mu_);
  auto& weak = instance_locks_[uuid];
  auto strong = weak.lock();
  if (!strong) {
    strong = std::make_shared<Mutex>();
    weak = strong;
  }
  if (instance_locks_.size() > 4096)  // drop entries nobody holds
    std::erase_if(instance_locks_, [](const auto& kv) { return kv.second.expired(); });
  return strong;
}

Error ComputeManager::busy(const std::string& uuid) const {
  return make_error(Errc::conflict,
                    "another operation is in progress on instance " + uuid + "; retry when it ends");
}

namespace {
bool valid_instance_name(const std::string& n) {
  if (n.empty() || n.size() > 63 || !std::isalnum(static_cast<unsigned char>(n[0]))) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}
// The audit line of an operation on `id` (a uuid or a name) until find()
// names the instance.
audit::Scope audit_of(std::string_view operation, const std::string& id) {
  const bool uuid = is_uuid(id);
  return audit::Scope(operation, uuid ? id : "", uuid ? "" : id);
}
}  // namespace

Result<InstanceRecord> ComputeManager::boot(const std::string& name, const std::string& image_id,
                                            int memory_mb, std::int64_t vcpus) {
  audit::Scope audit("boot", "", name);
  if (!valid_instance_name(name))
    return audit.fail(
        make_error(Errc::invalid_argument, "instance name '" + name +
                                               "' is invalid: 1-63 letters, digits, '.', '_' or '-', "
                                               "starting with a letter or digit"));
  if (!memory_mb_in_range(memory_mb))
    return audit.fail(make_error(Errc::invalid_argument,
                                 "memory_mb must be from " + std::to_string(kMinMemoryMb) + " to " +
                                     std::to_string(kMaxMemoryMb) + ", got " + std::to_string(memory_mb)));
  // One range, whichever end is crossed: 1 to the driver's max_vcpus.
  if (const int max = limit(Operation::boot_vcpus); vcpus < 1 || vcpus > (max > 0 ? max : INT_MAX))
    return audit.fail(
        make_error(Errc::invalid_argument,
                   "vcpus must be from 1 to " +
                       (max > 0 ? std::to_string(max) + " (driver '" + std::string(driver_->name()) + "' " +
                                      std::string(requirement(Operation::boot_vcpus).capability_name) + ")"
                                : std::string("the driver's maximum")) +
                       ", got " + std::to_string(vcpus)));
  // A bad image is refused before the record is written: no row is left.
  if (!valid_image_id(image_id))
    return audit.fail(make_error(
        Errc::invalid_argument,
        "image id '" + image_id.substr(0, 128) +
            (image_id.size() > 128 ? "...' (" + std::to_string(image_id.size()) + " bytes)" : "'") +
            " is invalid: it must match ^[A-Za-z0-9._-]{1,128}$ and must not "
            "contain '..'"));
  if (auto img = driver_->check_image(image_id); !img.ok()) return audit.fail(img.error());
  // A hypervisor that is away refuses the boot before the record is written:
  // a client retrying through a restart leaves no error record per try.
  if (auto why = driver_->unavailable_reason(); !why.empty())
    return audit.fail(make_error(Errc::hypervisor_unavailable, why));
  InstanceRecord rec;
  rec.uuid = new_uuid();
  rec.name = name;
  rec.host = host_;
  rec.image_id = image_id;
  rec.memory_mb = memory_mb;
  rec.vcpus = static_cast<int>(vcpus);
  rec.vm_state = VmState::building;
  rec.task_state = TaskState::spawning;
  rec.created_at = rec.updated_at = now_seconds();
  audit.instance(rec.uuid, name);
  auto lock = instance_lock(rec.uuid);
  MutexLock guard(*lock);
  // The record first: a crash from here on leaves a record that reconcile
  // finishes or rolls back, never an orphan domain or disk.
  if (auto st = store_.create_instance(rec); !st.ok()) return audit.fail(st.error());
  auto st = driver_->spawn({rec.uuid, name, image_id, memory_mb, rec.vcpus});
  rec.updated_at = now_seconds();
  rec.task_state = TaskState::none;
  if (st.ok()) {
    rec.vm_state = VmState::active;
  } else {
    // The driver rolled back what it made; the record stays, marked error,
    // unless the request itself was bad (then it never existed).
    rec.vm_state = VmState::error;
    if (st.error().code == Errc::invalid_argument || st.error().code == Errc::not_found) {
      rec.vm_state = VmState::deleted;
      rec.deleted_at = rec.updated_at;
    }
  }
  if (auto up = store_.update_instance(rec); !up.ok()) return audit.fail(up.error());
  if (!st.ok()) return audit.fail(st.error());
  audit.ok();
  return rec;
}

Result<InstanceRecord> ComputeManager::find(const std::string& id) {
  if (is_uuid(id)) {
    auto rec = store_.get_instance(id);
    if (!rec.ok()) return rec.error();
    if (rec->deleted_at != 0 || rec->host != host_)
      return make_error(Errc::not_found, "no live instance " + id + " on host " + host_);
    return rec;
  }
  auto all = store_.list_instances(host_, false);
  if (!all.ok()) return all.error();
  for (auto& r : all.value())
    if (r.name == id) return r;
  return make_error(Errc::not_found, "no live instance named '" + id + "' on host " + host_);
}

Result<std::vector<InstanceRecord>> ComputeManager::list() { return store_.list_instances(host_, false); }

Result<InstancePageInfo> ComputeManager::list_page(InstancePageQuery query, const InstanceVisitor& visit) {
  query.host = host_;
  return store_.visit_instances(query, visit);
}

Result<std::map<std::string, PowerState, std::less<>>> ComputeManager::power_states() {
  auto all = driver_->list_instances();
  if (!all.ok()) return all.error();
  std::map<std::string, PowerState, std::less<>> out;
  for (auto& d : all.value()) out.emplace(std::move(d.uuid), d.power_state);
  return out;
}

Result<ComputeManager::InstanceView> ComputeManager::show(const std::string& id) {
  auto rec = find(id);
  if (!rec.ok()) return rec.error();
  InstanceView v{rec.value(), std::nullopt};
  auto hv = driver_->get_instance(rec->uuid);
  if (hv.ok())
    v.hypervisor = std::move(hv.value());
  else if (hv.error().code != Errc::not_found)
    return hv.error();
  return v;
}

Status ComputeManager::destroy(const std::string& id) {
  auto audit = audit_of("delete", id);
  return audit.done(with_instance(id, audit, [&](InstanceRecord& found) -> Status {
    auto rec = store_.get_instance(found.uuid);  // fresh, under the lock
    if (!rec.ok()) return rec.error();
    if (rec->deleted_at != 0)
      return make_error(Errc::not_found, "instance " + rec->uuid + " is already deleted");
    rec->task_state = TaskState::deleting;
    rec->updated_at = now_seconds();
    if (auto st = store_.update_instance(rec.value()); !st.ok()) return st;
    if (auto st = driver_->destroy(rec->uuid); !st.ok()) {
      rec->task_state = TaskState::none;  // nothing was deleted; the instance stays as it was
      (void)store_.update_instance(rec.value());
      return st;
    }
    rec->vm_state = VmState::deleted;
    rec->task_state = TaskState::none;
    rec->deleted_at = rec->updated_at = now_seconds();
    return store_.update_instance(rec.value());
  }));
}

Status ComputeManager::reboot(const std::string& id) {
  auto audit = audit_of("reboot", id);
  return audit.done(with_instance(id, audit, [&](InstanceRecord& rec) { return driver_->reboot(rec.uuid); }));
}

Result<InterfaceInfo> ComputeManager::attach_interface(const std::string& id, const InterfaceSpec& spec) {
  auto audit = audit_of("attach_interface", id);
  if (!spec.mac.empty()) audit.field("mac", spec.mac);
  if (auto st = check(Operation::attach_interface); !st.ok()) return audit.fail(st.error());
  if (!spec.tag.empty())
    if (auto st = check(Operation::tagged_attach_interface); !st.ok()) return audit.fail(st.error());
  return audit.done(with_instance(
      id, audit, [&](InstanceRecord& rec) { return driver_->attach_interface(rec.uuid, spec); }));
}

Status ComputeManager::detach_interface(const std::string& id, const std::string& mac) {
  auto audit = audit_of("detach_interface", id);
  audit.field("mac", mac);
  if (auto st = check(Operation::detach_interface); !st.ok()) return audit.fail(st.error());
  return audit.done(with_instance(
      id, audit, [&](InstanceRecord& rec) { return driver_->detach_interface(rec.uuid, mac); }));
}

Result<ImageCacheReport> ComputeManager::image_cache_pass(bool dry_run, std::stop_token stop) {
  if (auto st = check(Operation::manage_image_cache); !st.ok()) return st.error();
  if (auto why = driver_->unavailable_reason(); !why.empty()) {
    Error e = make_error(Errc::hypervisor_unavailable, why);
    e.driver = driver_->name();
    return e;
  }
  auto hosts = store_.hosts_sharing(instances_path_);
  if (!hosts.ok()) return hosts.error();
  std::vector<std::string> all = hosts.value();
  if (auto reg = imagecache::registered_hosts(instances_path_); reg.ok()) {
    all.insert(all.end(), reg->begin(), reg->end());
  } else {
    return reg.error();  // cannot tell which hosts share the storage: do nothing
  }
  all.push_back(host_);
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  auto instances = store_.live_instances_on(all);
  if (!instances.ok()) return instances.error();
  if (stop.stop_requested()) {
    ImageCacheReport stopped;
    stopped.complete = false;
    stopped.stopped = true;
    stopped.dry_run = dry_run;
    stopped.notes.push_back("stopped before the pass began (the agent is stopping); nothing removed");
    return stopped;
  }
  auto report = driver_->manage_image_cache(instances.value(), dry_run, stop);
  if (report.ok()) {
    MutexLock lock(report_mu_);
    last_report_ = report.value();
    ++totals_.passes;
    if (!report->complete) ++totals_.incomplete;
    totals_.files_removed += report->files_removed;
    totals_.bytes_freed += report->bytes_freed;
  }
  return report;
}

std::optional<ImageCacheReport> ComputeManager::last_image_cache_report() const {
  MutexLock lock(report_mu_);
  return last_report_;
}

ComputeManager::ImageCacheTotals ComputeManager::image_cache_totals() const {
  MutexLock lock(report_mu_);
  return totals_;
}

TaskOutcome ComputeManager::run_image_cache_pass(std::stop_token stop) {
  // The seed's point: no store query and no driver call unless the driver
  // wants the pass and the operator has not disabled it.
  if (!allows(Operation::manage_image_cache))
    return TaskOutcome::skipped(undeclared(Operation::manage_image_cache));
  if (cfg_.image_cache.manager_interval <= 0)
    return TaskOutcome::skipped("[image_cache] manager_interval is " +
                                std::to_string(cfg_.image_cache.manager_interval) +
                                " (<= 0 disables the pass)");
  if (auto why = driver_->unavailable_reason(); !why.empty()) return TaskOutcome::skipped(why);
  if (stop.stop_requested()) return TaskOutcome::skipped(std::string(kStopping));
  auto report = image_cache_pass(false, stop);
  if (!report.ok()) return TaskOutcome::failed(report.error().describe());
  if (report->stopped)
    return TaskOutcome::skipped(std::string(kStopping) + ": pass ended early, nothing more removed");
  std::string msg = std::to_string(report->instances_considered) + " live instances, " +
                    std::to_string(report->disks_read) + " disks read; " +
                    std::to_string(report->files_removed) + " files removed, " +
                    std::to_string(report->bytes_freed) + " bytes freed";
  if (!report->complete)
    return TaskOutcome::failed(
        "incomplete pass, nothing unprovable removed: " + msg +
        (report->unreadable_disks.empty() ? "" : "; unreadable: " + report->unreadable_disks.front().path));
  return TaskOutcome::ran(msg);
}

TaskOutcome ComputeManager::sync_power_states(std::stop_token stop) {
  if (stop.stop_requested()) return TaskOutcome::skipped(std::string(kStopping));
  if (auto why = driver_->unavailable_reason(); !why.empty()) return TaskOutcome::skipped(why);
  auto r = reconcile(true, stop);
  if (!r.ok()) return TaskOutcome::failed(r.error().describe());
  for (const auto& u : r->lost)
    spdlog::warn("instance {} is in the store but not on the hypervisor; marked lost (kept)", u);
  if (r->interrupted)
    return TaskOutcome::skipped(std::string(kStopping) + ": ended early after marking " +
                                std::to_string(r->lost.size()) + " lost");
  return TaskOutcome::ran(
      std::to_string(r->lost.size()) + " lost, " + std::to_string(r->unknown_domains.size()) +
      " unknown domains, " + std::to_string(r->finished_spawns.size() + r->rolled_back_spawns.size()) +
      " interrupted spawns and " + std::to_string(r->finished_deletes.size()) +
      " interrupted deletes resolved, " + std::to_string(r->orphan_dirs.size()) + " orphan directories");
}

void ComputeManager::register_periodic_tasks(PeriodicTaskRunner& runner) {
  PeriodicTask cache{std::string(kImageCacheTask), static_cast<double>(cfg_.image_cache.manager_interval),
                     FirstRun::after_spacing, "",
                     [this](std::stop_token st) { return run_image_cache_pass(st); }};
  // Decided once, from the capabilities read at start: the task is not even
  // scheduled when the driver does not want it.
  if (!allows(Operation::manage_image_cache))
    cache.disabled_reason = undeclared(Operation::manage_image_cache);
  else if (cfg_.image_cache.manager_interval <= 0)
    cache.disabled_reason = "[image_cache] manager_interval is " +
                            std::to_string(cfg_.image_cache.manager_interval) + " (<= 0 disables the pass)";
  if (cache.disabled_reason.empty())
    spdlog::info("image-cache task enabled: driver '{}' declares has_imagecache; every {} s", driver_->name(),
                 cfg_.image_cache.manager_interval);
  runner.add(std::move(cache));
  PeriodicTask sync{std::string(kPowerSyncTask), static_cast<double>(cfg_.defaults.sync_power_state_interval),
                    FirstRun::immediately, "", [this](std::stop_token st) { return sync_power_states(st); }};
  if (cfg_.defaults.sync_power_state_interval <= 0)
    sync.disabled_reason = "[DEFAULT] sync_power_state_interval is " +
                           std::to_string(cfg_.defaults.sync_power_state_interval) +
                           " (<= 0 disables the task)";
  runner.add(std::move(sync));
  runner.add(fleet_reporter_->task());
}

}  // namespace virtcap::compute
