// A page of 1,000 instances from the SQLite store: list_instances (every row
// copied into an InstanceRecord, the vector returned) against
// visit_instances (one statement stepped, each row handed over as views). The
// visitor sums the field sizes, so both sides touch every field.
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <filesystem>

#include "ratio.h"
#include "store/sqlite/sqlite_store.h"

namespace {

using namespace virtcap;

struct World {
  std::filesystem::path root;
  std::unique_ptr<store::SqliteStore> store;
  World() {
    char tmpl[] = "/var/tmp/virtcap-store-bench-XXXXXX";
    root = ::mkdtemp(tmpl);
    store = std::move(store::SqliteStore::open((root / "virtcap.db").string()).value());
    for (int i = 0; i < 1000; ++i) {
      char uuid[37];
      std::snprintf(uuid, sizeof uuid, "00000000-0000-4000-8000-%012d", i);
      InstanceRecord r{uuid,
                       "instance-" + std::to_string(i),
                       "host-a",
                       "cirros",
                       512,
                       1,
                       VmState::active,
                       TaskState::none,
                       i,
                       i,
                       0};
      (void)store->create_instance(r);
    }
  }
  ~World() { std::filesystem::remove_all(root); }
};

World& world() {
  static World w;
  return w;
}

void BM_ListInstances1000(benchmark::State& state) {
  auto& s = *world().store;
  for (auto _ : state) {
    std::size_t bytes = 0;
    auto all = s.list_instances("host-a", false);
    for (const auto& r : *all)
      bytes += r.uuid.size() + r.name.size() + r.image_id.size() + to_string(r.vm_state).size();
    benchmark::DoNotOptimize(bytes);
  }
}
BENCHMARK(BM_ListInstances1000)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_VisitInstances1000(benchmark::State& state) {
  auto& s = *world().store;
  for (auto _ : state) {
    std::size_t bytes = 0;
    auto info = s.visit_instances({"host-a", false, 1000, ""}, [&](const InstanceRowView& r) {
      bytes += r.uuid.size() + r.name.size() + r.image_id.size() + to_string(r.vm_state).size();
    });
    if (!info.ok() || info->rows != 1000) state.SkipWithError("visit failed");
    benchmark::DoNotOptimize(bytes);
  }
}
BENCHMARK(BM_VisitInstances1000)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  return virtcap::bench::run_with_ratios(
      argc, argv,
      {{"BM_ListInstances1000/real_time", "BM_VisitInstances1000/real_time",
        "1,000 instances: visit (views) vs list (records)"}});
}
