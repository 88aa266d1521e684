#include "compute/manager.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

#include <cctype>
#include <cmath>
#include <functional>
#include <stop_token>

#include "capabilities/render.h"
#include "fleet/fleet.h"
#include "store/memory/memory_store.h"
#include "support/test_support.h"
#include "virt/fake/fake_driver.h"

namespace virtcap::compute {
namespace {

// A real in-memory store that counts every call the manager makes, from
// the moment it is built (construction included).
class CountingStore : public store::MemoryStore {
 public:
  Status register_host(const HostRecord& host) override {
    ++registrations;
    return MemoryStore::register_host(host);
  }
  Result<std::vector<std::string>> hosts_sharing(const std::string& path) override {
    ++hosts_queries;
    return MemoryStore::hosts_sharing(path);
  }
  Result<std::vector<InstanceRecord>> live_instances_on(const std::vector<std::string>& hosts) override {
    ++instance_queries;
    return MemoryStore::live_instances_on(hosts);
  }
  Status create_instance(const InstanceRecord& r) override {
    ++other_calls;
    return MemoryStore::create_instance(r);
  }
  Result<InstanceRecord> get_instance(const std::string& uuid) override {
    ++other_calls;
    return MemoryStore::get_instance(uuid);
  }
  Status update_instance(const InstanceRecord& r) override {
    ++other_calls;
    auto st = MemoryStore::update_instance(r);
    if (on_update) on_update();
    return st;
  }
  std::function<void()> on_update;  // after each update_instance
  Result<std::vector<InstanceRecord>> list_instances(const std::string& host, bool include_deleted) override {
    ++other_calls;
    return MemoryStore::list_instances(host, include_deleted);
  }
  // Every call but the host registration create() makes.
  int queries() const { return hosts_queries + instance_queries + other_calls; }
  int registrations = 0;
  int hosts_queries = 0;
  int instance_queries = 0;
  int other_calls = 0;
};

// Every driver entry point the manager can call, summed.
int driver_calls(const fake::FakeDriver& d) {
  const auto& c = d.calls();
  return c.spawn + c.destroy + c.reboot + c.attach_interface + c.detach_interface + c.list_instances +
         c.manage_image_cache;
}

// Counts how often the manager asks the driver for its capabilities.
class CapsCountingDriver : public fake::FakeDriver {
 public:
  using FakeDriver::FakeDriver;
  const Capabilities& capabilities() const override {
    ++reads;
    return FakeDriver::capabilities();
  }
  mutable int reads = 0;
};

// A hypervisor that cannot say what the host has.
class NoResourcesDriver : public fake::FakeDriver {
 public:
  using FakeDriver::FakeDriver;
  Result<HostResources> host_resources() override {
    return make_error(Errc::hypervisor_unavailable, "hypervisor at 'fake://' is unavailable: gone");
  }
};

// A hypervisor that is away (its connection down, reconnecting).
class AwayDriver : public fake::FakeDriver {
 public:
  using FakeDriver::FakeDriver;
  std::string unavailable_reason() const override { return "hypervisor at 'fake://' is unavailable: gone"; }
};

// One scratch instances path for the whole test binary.
const std::string& shared_path() {
  static const testing::TempDir dir("virtcap-manager");
  static const std::string path = dir.sub("instances");
  return path;
}

config::Config test_config(int interval = 2400) {
  config::Config c;
  c.defaults.host = "host-a";
  c.defaults.instances_path = shared_path();
  c.image_cache.manager_interval = interval;
  return c;
}

struct Harness {
  CountingStore store;
  fake::FakeDriver* driver = nullptr;
  std::unique_ptr<ComputeManager> mgr;

  Harness(const Capabilities& caps, config::Config cfg = test_config(), std::string name = "fake") {
    auto d = std::make_unique<fake::FakeDriver>(name, caps);
    driver = d.get();
    auto m = ComputeManager::create(cfg, store, std::move(d));
    EXPECT_TRUE(m.ok());
    mgr = std::move(m.value());
  }
};

TEST(ImageCachePass, SkippedWithoutTheCapability_NoStoreQueryNoDriverCall) {
  Harness h(fake::kFake);
  const auto out = h.mgr->run_image_cache_pass();
  EXPECT_EQ(out.kind, TaskOutcome::Kind::skipped);
  EXPECT_NE(out.message.find("has_imagecache"), std::string::npos) << out.message;
  // Counted from the store's birth: create() registers the host, nothing else.
  EXPECT_EQ(h.store.registrations, 1);
  EXPECT_EQ(h.store.queries(), 0);
  EXPECT_EQ(driver_calls(*h.driver), 0);
}

// POST /v1/image-cache/pass and `virtcap imagecache` call image_cache_pass()
// directly, not through the periodic task: the gate must be there too.
TEST(ImageCachePass, DirectPassWithoutTheCapabilityIsRefused_NoStoreQueryNoDriverCall) {
  for (bool dry_run : {true, false}) {
    Harness h(fake::kFake, test_config(), "fake_nocache");
    auto r = h.mgr->image_cache_pass(dry_run);
    ASSERT_FALSE(r.ok()) << "dry_run=" << dry_run;
    EXPECT_EQ(r.error().code, Errc::capability_not_supported);
    EXPECT_EQ(r.error().capability, "has_imagecache");
    EXPECT_EQ(r.error().operation, "manage_image_cache");
    EXPECT_EQ(r.error().driver, "fake_nocache");
    EXPECT_EQ(h.store.registrations, 1);
    EXPECT_EQ(h.store.queries(), 0) << "dry_run=" << dry_run;
    EXPECT_EQ(driver_calls(*h.driver), 0) << "dry_run=" << dry_run;
    EXPECT_FALSE(h.mgr->last_image_cache_report().has_value());
  }
}

TEST(ImageCachePass, DirectPassWithTheCapabilityReachesStoreAndDriver) {
  Harness h(fake::kFakeImageCache);
  auto r = h.mgr->image_cache_pass(true);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(h.store.hosts_queries, 1);
  EXPECT_EQ(h.store.instance_queries, 1);
  EXPECT_EQ(h.driver->calls().manage_image_cache.load(), 1);
  EXPECT_EQ(driver_calls(*h.driver), 1);
}

// The periodic task with the agent's stop requested: no store query, no
// driver call; the stop handed on ends a pass between its steps.
TEST(ImageCachePass, SkippedOnceTheAgentStops_NoStoreQueryNoDriverCall) {
  Harness h(fake::kFakeImageCache);
  std::stop_source stop;
  stop.request_stop();
  const auto out = h.mgr->run_image_cache_pass(stop.get_token());
  EXPECT_EQ(out.kind, TaskOutcome::Kind::skipped);
  EXPECT_NE(out.message.find("the agent is stopping"), std::string::npos) << out.message;
  EXPECT_EQ(h.store.queries(), 0);
  EXPECT_EQ(driver_calls(*h.driver), 0);
  auto direct = h.mgr->image_cache_pass(false, stop.get_token());
  ASSERT_TRUE(direct.ok());
  EXPECT_TRUE(direct->stopped);
  EXPECT_FALSE(direct->complete);
  EXPECT_EQ(driver_calls(*h.driver), 0) << "stopped before the driver's pass";
}

TEST(ImageCachePass, SkippedWhenTheIntervalIsNotPositive_NoStoreQueryNoDriverCall) {
  for (int interval : {0, -1}) {
    Harness h(fake::kFakeImageCache, test_config(interval));
    const auto out = h.mgr->run_image_cache_pass();
    EXPECT_EQ(out.kind, TaskOutcome::Kind::skipped);
    EXPECT_NE(out.message.find("manager_interval"), std::string::npos) << out.message;
    EXPECT_EQ(h.store.registrations, 1);
    EXPECT_EQ(h.store.queries(), 0);
    EXPECT_EQ(driver_calls(*h.driver), 0);
  }
}

TEST(ImageCachePass, RunsWithInstancesOfEveryHostSharingThePath) {
  Harness h(fake::kFakeImageCache);
  ASSERT_TRUE(h.store.register_host({"host-b", shared_path(), 0}).ok());
  ASSERT_TRUE(h.store.register_host({"host-c", "/elsewhere", 0}).ok());
  auto add = [&](const std::string& uuid, const std::string& host, bool deleted) {
    InstanceRecord r;
    r.uuid = uuid;
    r.host = host;
    r.image_id = "img";
    r.deleted_at = deleted ? 1 : 0;
    ASSERT_TRUE(h.store.create_instance(r).ok());
  };
  add("a1", "host-a", false);
  add("b1", "host-b", false);
  add("b2", "host-b", true);   // deleted: not live
  add("c1", "host-c", false);  // other storage
  const auto out = h.mgr->run_image_cache_pass();
  EXPECT_EQ(out.kind, TaskOutcome::Kind::ran) << out.message;
  EXPECT_EQ(h.store.hosts_queries, 1);
  EXPECT_EQ(h.store.instance_queries, 1);
  EXPECT_EQ(h.driver->calls().manage_image_cache.load(), 1);
  EXPECT_EQ(h.driver->last_image_cache_instances(), 2u);
}

TEST(Manager, ReadsCapabilitiesOnceAtStart) {
  CountingStore store;
  auto d = std::make_unique<CapsCountingDriver>("counting", fake::kFake);
  auto* drv = d.get();
  auto m = ComputeManager::create(test_config(), store, std::move(d));
  ASSERT_TRUE(m.ok());
  const int reads_at_start = drv->reads;
  EXPECT_EQ(reads_at_start, 1);
  auto& mgr = *m.value();
  auto rec = mgr.boot("vm", "img", 256, 1);
  ASSERT_TRUE(rec.ok());
  for (int i = 0; i < 100; ++i) {
    (void)mgr.run_image_cache_pass();
    (void)mgr.check(Operation::attach_interface);
    ASSERT_TRUE(mgr.attach_interface(rec->uuid, {}).ok());
  }
  EXPECT_EQ(drv->reads, reads_at_start);
}

TEST(Manager, EveryCapabilityDecisionIsARowOfKRequirements) {
  // has_imagecache gates the pass, its task and the host registration;
  // max_vcpus bounds a boot's vcpus: both through the table.
  EXPECT_TRUE(requirement(Operation::manage_image_cache).capability == &Capabilities::has_imagecache);
  EXPECT_TRUE(requirement(Operation::boot_vcpus).limit == &Capabilities::max_vcpus);
  Capabilities capped;
  capped.max_vcpus = 2;
  Harness h(capped, test_config(), "fake_capped");
  EXPECT_FALSE(h.mgr->allows(Operation::manage_image_cache));
  EXPECT_EQ(h.mgr->limit(Operation::boot_vcpus), 2);
  EXPECT_EQ(h.mgr->limit(Operation::attach_interface), 0);  // not a limit
  auto three = h.mgr->boot("vm", "img", 256, 3);
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.error().code, Errc::invalid_argument);
  EXPECT_EQ(three.error().message, "vcpus must be from 1 to 2 (driver 'fake_capped' max_vcpus), got 3");
  EXPECT_TRUE(h.mgr->boot("vm", "img", 256, 2).ok());
  const auto skipped = h.mgr->run_image_cache_pass();
  EXPECT_EQ(skipped.kind, TaskOutcome::Kind::skipped);
  EXPECT_EQ(skipped.message, "driver 'fake_capped' does not declare capability has_imagecache");
  Capabilities unlimited;
  unlimited.has_imagecache = true;
  Harness u(unlimited);
  EXPECT_TRUE(u.mgr->allows(Operation::manage_image_cache));
  EXPECT_EQ(u.mgr->limit(Operation::boot_vcpus), 0);
  EXPECT_TRUE(u.mgr->boot("big", "img", 256, 4096).ok());
}

TEST(Manager, RefusesAnOperationUpFrontNamingTheCapability) {
  Harness h(Capabilities{}, test_config(), "fake_minimal");
  auto rec = h.mgr->boot("vm", "img", 256, 1);
  ASSERT_TRUE(rec.ok());
  auto r = h.mgr->attach_interface(rec->uuid, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::capability_not_supported);
  EXPECT_EQ(r.error().capability, "supports_attach_interface");
  EXPECT_EQ(r.error().operation, "attach_interface");
  EXPECT_EQ(r.error().driver, "fake_minimal");
  EXPECT_NE(r.error().message.find("supports_attach_interface"), std::string::npos);
  auto d = h.mgr->detach_interface(rec->uuid, "52:54:00:00:00:01");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().capability, "supports_attach_interface");
  // The driver was never touched.
  EXPECT_EQ(h.driver->calls().attach_interface.load(), 0);
  EXPECT_EQ(h.driver->calls().detach_interface.load(), 0);
}

TEST(Manager, TaggedAttachNeedsItsOwnCapability) {
  constexpr Capabilities kUntagged{.supports_attach_interface = true};
  Harness h(kUntagged);
  auto rec = h.mgr->boot("vm", "img", 256, 1);
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(h.mgr->attach_interface(rec->uuid, {}).ok());
  auto r = h.mgr->attach_interface(rec->uuid, {.tag = "nic1"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().capability, "supports_tagged_attach_interface");
  EXPECT_EQ(h.driver->calls().attach_interface.load(), 1);
}

TEST(Manager, AllowedOperationsReachTheDriver) {
  Harness h(fake::kFake);
  auto rec = h.mgr->boot("vm", "img", 256, 2);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->vm_state, VmState::active);
  auto nic = h.mgr->attach_interface(rec->uuid, {.tag = "nic1"});
  ASSERT_TRUE(nic.ok()) << nic.error().describe();
  EXPECT_TRUE(h.mgr->detach_interface(rec->uuid, nic->mac).ok());
  EXPECT_TRUE(h.mgr->reboot(rec->uuid).ok());
  EXPECT_TRUE(h.mgr->destroy(rec->uuid).ok());
  EXPECT_EQ(h.store.get_instance(rec->uuid)->vm_state, VmState::deleted);
  EXPECT_EQ(h.mgr->reboot("nope").error().code, Errc::not_found);
}

// An id is a uuid only in the canonical lower-case form (common/uuid.h);
// anything else, even uuid-shaped, is a name.
TEST(Manager, FindTakesOnlyACanonicalUuidAsAUuid) {
  Harness h(fake::kFake);
  const std::string shaped = "vvvvvvvv-wwww-xxxx-yyyy-zzzzzzzzzzzz";
  auto named = h.mgr->boot(shaped, "img", 256, 1);
  ASSERT_TRUE(named.ok()) << named.error().describe();
  EXPECT_EQ(h.mgr->reboot(shaped).ok(), true) << "found by name";
  EXPECT_TRUE(h.mgr->reboot(named->uuid).ok()) << "found by uuid";
  std::string upper = named->uuid;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(h.mgr->reboot(upper).error().code, Errc::not_found);
}

TEST(Manager, BootBeyondMaxVcpusIsRefused) {
  Harness h(fake::kFake);
  auto r = h.mgr->boot("big", "img", 256, 65);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_EQ(h.driver->calls().spawn.load(), 0);
}

TEST(Manager, UnknownDriverNamesItAndListsTheAvailableOnes) {
  CountingStore store;
  auto m = ComputeManager::create(test_config(), store, "nosuch");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, Errc::driver_load_failed);
  EXPECT_NE(m.error().message.find("'nosuch'"), std::string::npos);
  EXPECT_NE(m.error().message.find("fake_imagecache"), std::string::npos);
}

TEST(Manager, DriverThatFailsToStartIsALoadFailure) {
  CountingStore store;
  auto m = ComputeManager::create(test_config(), store, "fake_failing");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, Errc::driver_load_failed);
  EXPECT_NE(m.error().message.find("'fake_failing'"), std::string::npos);
  EXPECT_NE(m.error().message.find("available drivers"), std::string::npos);
}

TEST(Manager, ImageCacheTaskIsNotScheduledWithoutTheCapability) {
  Harness h(fake::kFake);
  PeriodicTaskRunner runner({});
  h.mgr->register_periodic_tasks(runner);
  const auto st = runner.status();
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[0].name, kImageCacheTask);
  EXPECT_FALSE(st[0].enabled);
  EXPECT_NE(st[0].disabled_reason.find("has_imagecache"), std::string::npos);
  EXPECT_TRUE(st[1].enabled);
  EXPECT_EQ(st[2].name, kFleetReportTask);
  EXPECT_FALSE(st[2].enabled) << "no [fleet] url: standalone";
  EXPECT_NE(st[2].disabled_reason.find("[fleet] url is empty"), std::string::npos);

  Harness with(fake::kFakeImageCache);
  PeriodicTaskRunner runner2({});
  with.mgr->register_periodic_tasks(runner2);
  EXPECT_TRUE(runner2.status()[0].enabled);
}

// What the fleet_report task sends: a uuid kept in the state directory, the
// rendered traits, and usage summed from the store's live instances.
TEST(Manager, FleetReportCarriesUuidTraitsInventoryAndUsage) {
  virtcap::testing::TempDir state("virtcap-fleet-report");
  auto cfg = test_config();
  cfg.defaults.state_path = state.str();
  cfg.fleet.url = "http://127.0.0.1:1";
  cfg.fleet.report_interval = 1;  // one attempt: the back-off never outlasts the interval
  Harness h(fake::kFake, cfg);
  ASSERT_TRUE(h.mgr->boot("a", "img", 256, 2).ok());
  ASSERT_TRUE(h.mgr->boot("b", "img", 512, 1).ok());
  auto r = h.mgr->fleet_reporter().build();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->name, "host-a");
  EXPECT_TRUE(fleet::check_report(*r).ok());
  EXPECT_EQ(r->traits, caps::traits(h.mgr->capabilities()));
  ASSERT_TRUE(r->inventories[0] && r->inventories[1] && r->inventories[2]);
  EXPECT_EQ(r->inventories[0]->used, 3);
  EXPECT_EQ(r->inventories[1]->used, 768);
  EXPECT_GT(r->inventories[0]->total, 0);
  EXPECT_EQ(virtcap::testing::read_file(state.sub("host_uuid")), r->uuid + "\n");
  Harness again(fake::kFake, cfg);
  auto r2 = again.mgr->fleet_reporter().build();
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->uuid, r->uuid) << "the uuid survives a restart";
  // Standalone: the task is disabled; an unreachable service fails the run, not the agent.
  const auto out = h.mgr->fleet_reporter().run(std::stop_token{});
  EXPECT_EQ(out.kind, TaskOutcome::Kind::failed);
  EXPECT_NE(out.message.find("127.0.0.1:1"), std::string::npos) << out.message;
}

// The inventory comes from the hypervisor (virNodeGetInfo, asked here
// independently on libvirt's test driver) and [compute]; the fleet index
// then offers exactly (total - reserved) * ratio - used of each.
TEST(Manager, FleetReportInventoryComesFromTheHypervisorAndConfig) {
  virtcap::testing::TempDir state("virtcap-fleet-inventory");
  auto cfg = test_config();
  cfg.defaults.state_path = state.str();
  cfg.compute.driver = "libvirt";
  cfg.libvirt.uri = "test:///default";
  cfg.compute.reserved_host_cpus = 2;
  cfg.compute.reserved_host_memory_mb = 1024;
  cfg.compute.reserved_host_disk_mb = 1025;  // rounds up to 2 GiB
  cfg.compute.cpu_allocation_ratio = 3.5;
  cfg.compute.ram_allocation_ratio = 1.5;
  cfg.compute.disk_allocation_ratio = 0.5;
  store::MemoryStore store;
  auto mgr = ComputeManager::create(cfg, store);
  ASSERT_TRUE(mgr.ok()) << mgr.error().message;

  virConnectPtr conn = virConnectOpen("test:///default");
  ASSERT_NE(conn, nullptr);
  virNodeInfo node{};
  const int got = virNodeGetInfo(conn, &node);
  virConnectClose(conn);
  ASSERT_EQ(got, 0);

  auto r = (*mgr)->fleet_reporter().build();
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& inv = r->inventories;
  ASSERT_TRUE(inv[0] && inv[1] && inv[2]);
  EXPECT_EQ(inv[0]->total, static_cast<std::int64_t>(node.cpus));
  EXPECT_EQ(inv[1]->total, static_cast<std::int64_t>(node.memory / 1024));
  EXPECT_EQ(inv[0]->reserved, 2);
  EXPECT_EQ(inv[1]->reserved, 1024);
  EXPECT_EQ(inv[2]->reserved, 2);
  EXPECT_EQ(inv[0]->allocation_ratio, 3.5);
  EXPECT_EQ(inv[1]->allocation_ratio, 1.5);
  EXPECT_EQ(inv[2]->allocation_ratio, 0.5);

  auto fleet = fleet::Fleet::open({.database_url = "sqlite://" + state.sub("fleet.sqlite"),
                                   .host_down_after = std::chrono::seconds(180),
                                   .store = {},
                                   .listen = false});
  ASSERT_TRUE(fleet.ok()) << fleet.error().message;
  r->seen_at_ms = fleet::now_ms();
  ASSERT_TRUE((*fleet)->report(*r).ok());
  std::array<std::int64_t, fleet::kResourceClassCount> free{};
  for (std::size_t i = 0; i < free.size(); ++i)
    free[i] = static_cast<std::int64_t>(
        std::floor(static_cast<double>(inv[i]->total - inv[i]->reserved) * inv[i]->allocation_ratio) -
        static_cast<double>(inv[i]->used));
  EXPECT_EQ(free[0], static_cast<std::int64_t>(std::floor((node.cpus - 2) * 3.5)));
  ASSERT_GT(free[1], 0);
  const auto ask = [&](std::int64_t vcpu, std::int64_t mem) {
    auto q = fleet::parse_query(
        {{"resources", "VCPU:" + std::to_string(vcpu) + ",MEMORY_MB:" + std::to_string(mem)}});
    EXPECT_TRUE(q.ok());
    return (*fleet)->query(*q, true);
  };
  const auto fits = ask(free[0], free[1]);
  ASSERT_EQ(fits.matched, 1u);
  EXPECT_EQ(fits.hosts[0].free[0], free[0]);
  EXPECT_EQ(fits.hosts[0].free[1], free[1]);
  EXPECT_EQ(fits.hosts[0].free[2], free[2]);
  const auto too_many = ask(free[0] + 1, free[1]);
  EXPECT_EQ(too_many.matched, 0u);
  ASSERT_EQ(too_many.excluded.size(), 1u);
  EXPECT_EQ(too_many.excluded[0].kind, fleet::Exclusion::Kind::not_enough_resource);
  EXPECT_EQ(too_many.excluded[0].free, free[0]);
  EXPECT_EQ(ask(free[0], free[1] + 1).matched, 0u);
}

// No invented numbers: a hypervisor that cannot answer fails the report
// (and the run, with its reason), it never falls back to guesses.
TEST(Manager, FleetReportFailsWhenTheHypervisorCannotTellItsResources) {
  virtcap::testing::TempDir state("virtcap-fleet-noresources");
  auto cfg = test_config();
  cfg.defaults.state_path = state.str();
  cfg.fleet.url = "http://127.0.0.1:1";
  cfg.fleet.report_interval = 1;
  store::MemoryStore store;
  auto mgr = ComputeManager::create(cfg, store, std::make_unique<NoResourcesDriver>("fake", fake::kFake));
  ASSERT_TRUE(mgr.ok()) << mgr.error().message;
  auto r = (*mgr)->fleet_reporter().build();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::hypervisor_unavailable);
  const auto out = (*mgr)->fleet_reporter().run(std::stop_token{});
  EXPECT_EQ(out.kind, TaskOutcome::Kind::failed);
  EXPECT_NE(out.message.find("fake://' is unavailable: gone"), std::string::npos) << out.message;
}

// A boot while the hypervisor is away (a client retrying through a restart,
// issue 19 item 7) is hypervisor_unavailable and writes nothing: no record in
// state error per try, no driver call.
TEST(Manager, ABootWhileTheHypervisorIsAwayWritesNoRecord) {
  store::MemoryStore store;
  auto d = std::make_unique<AwayDriver>("fake", fake::kFake);
  auto* driver = d.get();
  auto mgr = ComputeManager::create(test_config(), store, std::move(d));
  ASSERT_TRUE(mgr.ok()) << mgr.error().message;
  auto r = (*mgr)->boot("vm-1", "img", 64, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::hypervisor_unavailable);
  EXPECT_NE(r.error().message.find("unavailable: gone"), std::string::npos) << r.error().message;
  auto all = store.list_instances("host-a", true);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  EXPECT_EQ(driver->calls().spawn.load(), 0);
}

// Reserving more than the host has is refused at report time, naming the options.
TEST(Manager, FleetReportRefusesReservingMoreThanTheHostHas) {
  virtcap::testing::TempDir state("virtcap-fleet-overreserved");
  auto cfg = test_config();
  cfg.defaults.state_path = state.str();
  cfg.compute.reserved_host_cpus = 1048576;
  Harness h(fake::kFake, cfg);
  auto r = h.mgr->fleet_reporter().build();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().message.find("inventory VCPU: reserved 1048576 is more than total"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("[compute] reserved_host_*"), std::string::npos) << r.error().message;
}

TEST(Manager, PowerSyncMarksLostInstancesWithoutDeletingThem) {
  Harness h(fake::kFake);
  auto rec = h.mgr->boot("vm", "img", 256, 1);
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(h.driver->destroy(rec->uuid).ok());  // the hypervisor lost it
  const auto out = h.mgr->sync_power_states();
  EXPECT_EQ(out.kind, TaskOutcome::Kind::ran);
  auto after = h.store.get_instance(rec->uuid);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->vm_state, VmState::lost);
  EXPECT_EQ(after->deleted_at, 0);
}

// The power sync ends between two instances once the agent stops: what it
// fixed stays fixed, the rest waits for the next run.
TEST(Manager, PowerSyncStopsBetweenInstances) {
  Harness h(fake::kFake);
  std::vector<std::string> uuids;
  for (const char* name : {"a", "b", "c"}) {
    auto rec = h.mgr->boot(name, "img", 256, 1);
    ASSERT_TRUE(rec.ok());
    ASSERT_TRUE(h.driver->destroy(rec->uuid).ok());  // the hypervisor lost it
    uuids.push_back(rec->uuid);
  }
  const auto lost = [&] {
    int n = 0;
    for (const auto& u : uuids) n += h.store.get_instance(u)->vm_state == VmState::lost;
    return n;
  };
  std::stop_source stop;
  h.store.on_update = [&stop] { stop.request_stop(); };  // arrives while the first fix is written
  const auto out = h.mgr->sync_power_states(stop.get_token());
  EXPECT_EQ(out.kind, TaskOutcome::Kind::skipped);
  EXPECT_NE(out.message.find("the agent is stopping"), std::string::npos) << out.message;
  EXPECT_EQ(lost(), 1);
  h.store.on_update = nullptr;
  EXPECT_EQ(h.mgr->sync_power_states().kind, TaskOutcome::Kind::ran);
  EXPECT_EQ(lost(), 3);
}

}  // namespace
}  // namespace virtcap::compute
