// What the capabilities design costs, against the alternatives the seed weighs:
//  1. a capability read (a member load) against a dict-style string lookup;
//  2. a manager tick whose image-cache task is skipped by capability, against
//     the same tick when the work is always done ("to hell with performance"):
//     a store query of 10,000 instances handed to the driver.
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <map>
#include <string>

#include "compute/manager.h"
#include "ratio.h"
#include "store/memory/memory_store.h"
#include "virt/fake/fake_driver.h"

namespace {

using namespace virtcap;

void BM_CapabilityRead_Member(benchmark::State& state) {
  Capabilities caps = fake::kFakeImageCache;
  const Capabilities* p = &caps;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);  // the compiler may not assume the value
    bool v = p->has_imagecache;
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_CapabilityRead_Member);

void BM_CapabilityRead_StringMap(benchmark::State& state) {
  std::map<std::string, bool> caps;
  for (const char* k :
       {"has_imagecache", "supports_evacuate", "supports_migrate_to_same_host", "supports_attach_interface",
        "supports_device_tagging", "supports_tagged_attach_interface", "supports_tagged_attach_volume",
        "supports_extend_volume", "supports_multiattach", "supports_trusted_certs", "supports_pcpus",
        "supports_accelerators", "supports_secure_boot", "supports_vtpm"})
    caps[k] = false;
  caps["has_imagecache"] = true;
  const std::string key = "has_imagecache";
  auto* p = &caps;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    bool v = p->at(key);
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_CapabilityRead_StringMap);

constexpr int kInstances = 10000;

std::unique_ptr<compute::ComputeManager> make_manager(store::MemoryStore& store, const Capabilities& caps,
                                                      const char* name) {
  config::Config cfg;
  cfg.defaults.host = "bench-host";
  static const std::string scratch = [] {
    char tmpl[] = "/tmp/virtcap-bench-XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  cfg.defaults.instances_path = scratch;
  auto m = compute::ComputeManager::create(cfg, store, std::make_unique<fake::FakeDriver>(name, caps));
  for (int i = 0; i < kInstances; ++i) {
    InstanceRecord r;
    r.uuid = "uuid-" + std::to_string(i);
    r.name = "vm-" + std::to_string(i);
    r.host = "bench-host";
    r.image_id = "image-" + std::to_string(i % 200);
    (void)store.create_instance(r);
  }
  return std::move(m.value());
}

void BM_ManagerTick_SkippedByCapability(benchmark::State& state) {
  store::MemoryStore store;
  auto mgr = make_manager(store, fake::kFake, "fake");
  for (auto _ : state) {
    auto out = mgr->run_image_cache_pass();
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_ManagerTick_SkippedByCapability);

void BM_ManagerTick_AlwaysDoTheWork(benchmark::State& state) {
  store::MemoryStore store;
  auto mgr = make_manager(store, fake::kFakeImageCache, "fake_imagecache");
  for (auto _ : state) {
    auto out = mgr->run_image_cache_pass();
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_ManagerTick_AlwaysDoTheWork)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  return virtcap::bench::run_with_ratios(
      argc, argv,
      {{"BM_CapabilityRead_StringMap", "BM_CapabilityRead_Member",
        "capability read: member vs std::map lookup"},
       {"BM_ManagerTick_AlwaysDoTheWork", "BM_ManagerTick_SkippedByCapability",
        "image-cache tick: skipped by capability vs always (10k instances)"}});
}
