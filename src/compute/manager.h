// The compute manager: the upper layer. It loads the driver, reads its
// capabilities once, refuses operations the driver cannot do before touching
// it, and does work on the driver's behalf (the image-cache pass) only when
// the driver asks for it.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/audit.h"
#include "common/mutex.h"
#include "compute/fleet_reporter.h"
#include "compute/periodic.h"
#include "config/config.h"
#include "virtcap/capabilities.h"
#include "virtcap/driver.h"
#include "virtcap/store.h"

namespace virtcap::compute {

// Operations that depend on a capability. The table below is the only place
// the pairing is written; a misspelt capability in it does not compile.
// boot_vcpus is the vcpus a boot asks for, bounded by the driver's max_vcpus.
enum class Operation {
  attach_interface,
  tagged_attach_interface,
  detach_interface,
  manage_image_cache,
  boot_vcpus
};

struct Requirement {
  Operation op;
  std::string_view operation;
  // Either a capability the driver must declare ...
  bool Capabilities::*capability;
  // ... or the most the driver allows of the operation's amount (0: no limit).
  int Capabilities::*limit;
  std::string_view capability_name;
};

#define VIRTCAP_REQUIRES_(op, cap) \
  Requirement { Operation::op, #op, &Capabilities::cap, nullptr, #cap }
#define VIRTCAP_LIMITED_BY_(op, cap) \
  Requirement { Operation::op, #op, nullptr, &Capabilities::cap, #cap }
inline constexpr std::array kRequirements = {
    VIRTCAP_REQUIRES_(attach_interface, supports_attach_interface),
    VIRTCAP_REQUIRES_(tagged_attach_interface, supports_tagged_attach_interface),
    VIRTCAP_REQUIRES_(detach_interface, supports_attach_interface),
    VIRTCAP_REQUIRES_(manage_image_cache, has_imagecache),
    VIRTCAP_LIMITED_BY_(boot_vcpus, max_vcpus),
};
#undef VIRTCAP_LIMITED_BY_
#undef VIRTCAP_REQUIRES_

// The row of kRequirements for `op` (every Operation has exactly one).
constexpr const Requirement& requirement(Operation op) {
  for (const auto& r : kRequirements)
    if (r.op == op) return r;
  return kRequirements.front();  // unreachable: checked below
}
static_assert(
    [] {
      for (const auto& r : kRequirements)
        if (&requirement(r.op) != &r || (r.capability == nullptr) == (r.limit == nullptr)) return false;
      return true;
    }(),
    "each Operation has one row in kRequirements, with either a capability or a limit");

inline constexpr std::string_view kImageCacheTask = "image_cache_manager_pass";
inline constexpr std::string_view kPowerSyncTask = "sync_power_states";

// A random (version 4) uuid.
std::string new_uuid();

// The memory an instance may have, in MiB: 16 MiB to 16 TiB. boot() refuses
// anything else; the API and the CLI check the same range first, so their
// errors name their own field or flag.
inline constexpr int kMinMemoryMb = 16, kMaxMemoryMb = 16 * 1024 * 1024;
constexpr bool memory_mb_in_range(long long mb) { return mb >= kMinMemoryMb && mb <= kMaxMemoryMb; }

class ComputeManager {
 public:
  // Loads the configured driver (or `driver_override`), runs its init_host and
  // caches its capabilities. Failure is Errc::driver_load_failed naming the
  // driver and listing the available ones.
  static Result<std::unique_ptr<ComputeManager>> create(const config::Config& cfg, InstanceStore& store,
                                                        const std::string& driver_override = "");
  // The driver's name and capabilities after its init_host, without a
  // manager: no store, no host registration, nothing written (`virtcap
  // capabilities`). Errors as create().
  static Result<std::pair<std::string, Capabilities>> inspect(const config::Config& cfg,
                                                              const std::string& driver_override = "");
  // For callers that construct the driver themselves (tests, benchmarks).
  static Result<std::unique_ptr<ComputeManager>> create(const config::Config& cfg, InstanceStore& store,
                                                        std::unique_ptr<ComputeDriver> driver);

  const Capabilities& capabilities() const { return caps_; }
  std::string_view driver_name() const { return driver_->name(); }
  ComputeDriver& driver() { return *driver_; }
  const config::Config& config() const { return cfg_; }

  // OK if the driver's capabilities allow `op`; otherwise a
  // capability_not_supported error naming operation, capability and driver.
  Status check(Operation op) const;
  // Whether the driver declares the capability `op` requires.
  bool allows(Operation op) const;
  // The most the driver allows of `op`'s amount; 0: no limit.
  int limit(Operation op) const;

  // Instance operations, gated by capability. `id` is a uuid, or the name of
  // a live instance of this host. Operations on one instance are serialised:
  // a second one while the first runs is Errc::conflict.
  // vcpus: 1 to the driver's max_vcpus, the one range every caller reports.
  Result<InstanceRecord> boot(const std::string& name, const std::string& image_id, int memory_mb,
                              std::int64_t vcpus);
  Result<InstanceRecord> find(const std::string& id);
  Result<std::vector<InstanceRecord>> list();
  // One page of this host's instances (query.host is set here), streamed.
  Result<InstancePageInfo> list_page(InstancePageQuery query, const InstanceVisitor& visit);
  // The store's ContentsVersion (InstanceStore::contents_version).
  std::optional<ContentsVersion> store_version() { return store_.contents_version(); }
  // The hypervisor's power state of every instance it knows, by uuid.
  Result<std::map<std::string, PowerState, std::less<>>> power_states();
  struct InstanceView {
    InstanceRecord record;
    std::optional<DriverInstance> hypervisor;  // nullopt: the hypervisor does not know it
  };
  Result<InstanceView> show(const std::string& id);
  Status destroy(const std::string& uuid);
  Status reboot(const std::string& uuid);
  Result<InterfaceInfo> attach_interface(const std::string& uuid, const InterfaceSpec& spec);
  Status detach_interface(const std::string& uuid, const std::string& mac);

  // One image-cache pass now (CLI, API): refused with
  // capability_not_supported unless the driver declares has_imagecache.
  // Gathers the live instances of every host sharing the instances path (the
  // store's hosts plus those registered on the storage) and hands them down.
  // A stop request is checked between its steps (and handed to the driver).
  Result<ImageCacheReport> image_cache_pass(bool dry_run, std::stop_token stop = {});

  // Store, hypervisor and disks compared. With fix: interrupted spawns are
  // finished (domain present) or rolled back (domain absent, record kept as
  // error), interrupted deletes are completed, instances the hypervisor lost
  // are marked lost (never deleted). Domains and instance directories the
  // store does not know are reported, never removed. Instances with an
  // operation in progress in this process are left alone.
  struct ReconcileReport {
    std::vector<std::string> finished_spawns, rolled_back_spawns, finished_deletes, lost, unknown_domains,
        orphan_dirs, stuck;
    // A stop request ended it between two instances: what is listed was
    // done; unknown domains and orphan directories were not looked for.
    bool interrupted = false;
    bool consistent() const { return unknown_domains.empty() && orphan_dirs.empty() && stuck.empty(); }
  };
  Result<ReconcileReport> reconcile(bool fix, std::stop_token stop = {});

  // Periodic task bodies. The image-cache task returns at once, with no store
  // query and no driver call, without has_imagecache or with
  // [image_cache] manager_interval <= 0. Both take the runner's stop token
  // and end early (skipped, saying so) when a stop is requested between
  // their steps; the pass then removes nothing more.
  TaskOutcome run_image_cache_pass(std::stop_token stop = {});
  TaskOutcome sync_power_states(std::stop_token stop = {});

  // Adds this manager's periodic tasks to `runner` (which must outlive nothing
  // of the manager: stop the runner before destroying the manager).
  void register_periodic_tasks(PeriodicTaskRunner& runner);
  // Reports this host to [fleet] url (the "fleet_report" task).
  FleetReporter& fleet_reporter() { return *fleet_reporter_; }

 private:
  ComputeManager(const config::Config& cfg, InstanceStore& store, std::unique_ptr<ComputeDriver> driver);
  Status refuse(const Requirement& r) const;
  // "driver 'x' does not declare capability <op's capability>"
  std::string undeclared(Operation op) const;
  // A per-instance lock, taken with try_lock: a busy instance is a conflict.
  std::shared_ptr<Mutex> instance_lock(const std::string& uuid);
  Error busy(const std::string& uuid) const;
  // Finds `id`, names it in `audit`, takes its instance lock (try_lock:
  // busy is a conflict) and runs fn(record) with it held.
  template <class F>
  auto with_instance(const std::string& id, audit::Scope& audit, F&& fn)
      -> decltype(fn(std::declval<InstanceRecord&>()));

  Mutex locks_mu_;
  std::map<std::string, std::weak_ptr<Mutex>> instance_locks_ GUARDED_BY(locks_mu_);

  config::Config cfg_;
  InstanceStore& store_;
  std::unique_ptr<ComputeDriver> driver_;
  Capabilities caps_;  // read once, after init_host
  std::string host_;
  std::string instances_path_;
  std::unique_ptr<FleetReporter> fleet_reporter_;

 public:
  // The last image-cache pass's report, if any pass ran (for /v1/tasks).
  std::optional<ImageCacheReport> last_image_cache_report() const;
  // Every pass counted where it runs (periodic task, API, CLI alike).
  struct ImageCacheTotals {
    std::uint64_t passes = 0, incomplete = 0, files_removed = 0, bytes_freed = 0;
  };
  ImageCacheTotals image_cache_totals() const;

 private:
  mutable Mutex report_mu_;
  std::optional<ImageCacheReport> last_report_ GUARDED_BY(report_mu_);
  ImageCacheTotals totals_ GUARDED_BY(report_mu_);
};

template <class F>
auto ComputeManager::with_instance(const std::string& id, audit::Scope& audit, F&& fn)
    -> decltype(fn(std::declval<InstanceRecord&>())) {
  auto rec = find(id);
  if (!rec.ok()) return rec.error();
  audit.instance(rec->uuid, rec->name);
  auto lock = instance_lock(rec->uuid);
  if (!lock->try_lock()) return busy(rec->uuid);
  MutexLock guard(*lock, std::adopt_lock);
  return fn(rec.value());
}

}  // namespace virtcap::compute
