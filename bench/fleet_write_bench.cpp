// What one write costs the fleet index (issue 19, item 4: "a write costs in
// proportion to the host's own traits, not every trait that ever existed").
//
// An index of 10,000 hosts, each with 20 of 400 shared traits, plus V names
// held by one host each (V = 1,000 / 10,000 / 100,000 spread round-robin),
// so the vocabulary is about V + 400. The write: one host swaps its 35 traits
// for another 35 and back (HostIndex::apply, each iteration one apply).
//
// Baseline, the way before per-host trait lists: a write visited the bitset
// of every trait the index had ever made to clear the host's bit. It is
// reconstructed here as that walk over V + 400 bitsets of the same width,
// plus the same apply, so the ratio is what the walk used to add.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>

#include "fleet/bitset.h"
#include "fleet/index.h"
#include "ratio.h"

namespace {

using namespace virtcap;
using namespace virtcap::fleet;
using namespace std::chrono_literals;

constexpr int kHosts = 10000;

struct World {
  std::unique_ptr<HostIndex> index = std::make_unique<HostIndex>(3600s);
  std::vector<SlotBits> every_bitset;  // the baseline's walk
  HostRecord a, b;                     // the written host's two states
  bool at_a = true;
};

HostRecord host(int n, std::vector<std::string> traits) {
  HostRecord h;
  h.name = "host-" + std::to_string(n);
  char uuid[40];
  std::snprintf(uuid, sizeof uuid, "00000000-0000-4000-8000-%012d", n);
  h.uuid = uuid;
  h.generation = 1;
  for (auto& t : traits) h.traits.push_back({std::move(t), TraitOwner::agent});
  std::sort(h.traits.begin(), h.traits.end(), [](const auto& x, const auto& y) { return x.name < y.name; });
  h.inventories[0] = Inventory{64, 0, 4.0, 1};
  return h;
}

World& world(std::size_t vocabulary) {
  static std::map<std::size_t, std::unique_ptr<World>> worlds;
  auto& w = worlds[vocabulary];
  if (w) return *w;
  w = std::make_unique<World>();
  std::mt19937_64 rng(7);
  std::vector<std::vector<std::string>> traits(kHosts);
  for (int n = 0; n < kHosts; ++n)
    for (int k = 0; k < 20; ++k) traits[n].push_back("SHARED_" + std::to_string(rng() % 400));
  for (std::size_t v = 0; v < vocabulary; ++v) traits[v % kHosts].push_back("ONLY_" + std::to_string(v));
  for (int n = 0; n < kHosts; ++n) w->index->apply(host(n, std::move(traits[n])));
  std::vector<std::string> a, b;
  for (int k = 0; k < 35; ++k) {
    a.push_back("WRITE_A_" + std::to_string(k));
    b.push_back("WRITE_B_" + std::to_string(k));
  }
  w->a = host(kHosts, a);
  w->b = host(kHosts, b);
  w->b.generation = 2;
  w->index->apply(w->a);
  w->every_bitset.resize(w->index->trait_count());
  for (auto& bits : w->every_bitset) bits.resize_words((kHosts + 64) / 64);
  return *w;
}

void write_once(World& w) {
  w.at_a = !w.at_a;
  HostRecord& next = w.at_a ? w.a : w.b;
  next.generation += 2;  // always newer than the other state
  benchmark::DoNotOptimize(w.index->apply(next));
}

void BM_WriteOurs(benchmark::State& state) {
  auto& w = world(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) write_once(w);
  state.counters["vocabulary"] = static_cast<double>(w.index->trait_count());
}

void BM_WriteWalkingEveryBitset(benchmark::State& state) {
  auto& w = world(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    for (auto& bits : w.every_bitset) bits.reset(kHosts);
    benchmark::ClobberMemory();
    write_once(w);
  }
  state.counters["vocabulary"] = static_cast<double>(w.index->trait_count());
}

}  // namespace

BENCHMARK(BM_WriteOurs)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_WriteWalkingEveryBitset)
    ->Arg(1000)
    ->Arg(10000)
    ->Arg(100000)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  std::vector<virtcap::bench::Pair> pairs;
  for (const char* v : {"1000", "10000", "100000"})
    pairs.push_back({std::string("BM_WriteWalkingEveryBitset/") + v + "/real_time",
                     std::string("BM_WriteOurs/") + v + "/real_time",
                     std::string("one write, vocabulary ") + v + " + 400: walking every bitset vs ours"});
  pairs.push_back({"BM_WriteOurs/100000/real_time", "BM_WriteOurs/1000/real_time",
                   "ours at vocabulary 100,000 vs 1,000 (goal: about 1x, the host's own traits only)"});
  return virtcap::bench::run_with_ratios(argc, argv, pairs);
}
