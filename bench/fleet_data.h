// The benchmarks' generated fleet, from a fixed seed: 400 traits, 10 common
// ones on 85-95% of hosts, 200 rare ones on under 1%, 190 in between; 20-60
// traits per host, mean about 35; three inventories each.
#pragma once

#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fleet/model.h"

namespace virtcap::bench {

using fleet::HostRecord;
using fleet::Inventory;
using fleet::TraitOwner;

constexpr std::uint64_t kSeed = 20261126;
constexpr int kCommon = 10, kRare = 200, kTraits = 400;

inline std::string trait_name(int t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s_%03d", t < kCommon ? "COMMON" : t < kCommon + kRare ? "RARE" : "MID", t);
  return buf;
}

// Per-trait probability: common 0.85-0.95, rare 0.001-0.009, mid 0.02-0.245.
inline std::vector<double> trait_probabilities(std::mt19937_64& rng) {
  std::vector<double> p(kTraits);
  for (int t = 0; t < kTraits; ++t) {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    p[t] = t < kCommon ? 0.85 + 0.10 * u : t < kCommon + kRare ? 0.001 + 0.008 * u : 0.02 + 0.225 * u;
  }
  return p;
}

inline HostRecord make_host(int n, std::mt19937_64& rng, const std::vector<double>& p, std::int64_t now) {
  HostRecord h;
  h.name = "host-" + std::to_string(n);
  char uuid[40];
  std::snprintf(uuid, sizeof uuid, "%08x-0000-4000-8000-%012llx", static_cast<unsigned>(rng()),
                static_cast<unsigned long long>(n));
  h.uuid = uuid;
  h.generation = 1;
  h.last_seen_ms = now;
  h.agent_version = "0.1.0";
  h.api_url = "http://10.1." + std::to_string(n / 256 % 256) + "." + std::to_string(n % 256) + ":8080";
  std::uniform_real_distribution<double> u(0, 1);
  std::set<int> have;
  for (int t = 0; t < kTraits; ++t)
    if (u(rng) < p[t]) have.insert(t);
  while (have.size() < 20)
    have.insert(kCommon + kRare + static_cast<int>(rng() % (kTraits - kCommon - kRare)));
  while (have.size() > 60) have.erase(std::prev(have.end()));
  for (int t : have) h.traits.push_back({trait_name(t), TraitOwner::agent});
  h.inventories[0] = Inventory{64, 4, 4.0, static_cast<std::int64_t>(rng() % 200)};
  h.inventories[1] = Inventory{262144, 4096, 1.0, static_cast<std::int64_t>(rng() % 200000)};
  h.inventories[2] = Inventory{2000, 100, 1.0, static_cast<std::int64_t>(rng() % 1500)};
  return h;
}

}  // namespace virtcap::bench
