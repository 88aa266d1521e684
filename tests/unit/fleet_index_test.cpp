// The in-memory fleet index against a direct evaluation of every host
// (the reference), on random fleets with common and rare traits, and its
// explanations.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "fleet/index.h"

using namespace virtcap;
using namespace virtcap::fleet;

namespace {

constexpr std::int64_t kNow = 1'800'000'000'000;
constexpr std::chrono::milliseconds kDownAfter{180000};

std::string uuid_for(std::uint64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xffffffff), static_cast<unsigned long long>(n));
  return buf;
}

HostRecord make_host(std::uint64_t n, std::mt19937_64& rng, int traits) {
  HostRecord h;
  h.name = "host-" + std::to_string(n);
  h.uuid = uuid_for(n);
  h.generation = 1;
  h.last_seen_ms = kNow - static_cast<std::int64_t>(rng() % 400000);  // some are down
  std::set<std::string> names;
  for (int t = 0; t < traits; ++t) {
    // Trait t is on ~ 1/(t+1) of hosts: T0 on most, high numbers rare.
    if (rng() % static_cast<unsigned>(t + 1) == 0) names.insert("T" + std::to_string(t));
  }
  if (rng() % 4 == 0) names.insert("CUSTOM_OP");
  for (const auto& name : names)
    h.traits.push_back({name, is_custom_trait(name) ? TraitOwner::operator_ : TraitOwner::agent});
  if (rng() % 10 != 0) h.inventories[0] = Inventory{16, 2, 4.0, static_cast<std::int64_t>(rng() % 60)};
  h.inventories[1] = Inventory{65536, 1024, 1.0, static_cast<std::int64_t>(rng() % 65536)};
  return h;
}

bool has(const HostRecord& h, const std::string& t) {
  return std::any_of(h.traits.begin(), h.traits.end(), [&](const HostTrait& x) { return x.name == t; });
}

// The reference: every reason for one host, straight from the record, as
// (kind, what: the trait, the any-of group or the resource class).
using Reason = std::pair<Exclusion::Kind, std::string>;
std::vector<Reason> reference_reasons(const HostRecord& h, const Query& q) {
  std::vector<Reason> out;
  for (const auto& r : q.required)
    if (!has(h, r)) out.emplace_back(Exclusion::Kind::missing_required, r);
  for (const auto& f : q.forbidden)
    if (has(h, f)) out.emplace_back(Exclusion::Kind::has_forbidden, f);
  for (const auto& g : q.any_of)
    if (std::none_of(g.begin(), g.end(), [&](const std::string& t) { return has(h, t); }))
      out.emplace_back(Exclusion::Kind::none_of_any_of, g[0] + "," + g[1] + "," + g[2]);
  for (auto rc : kAllResourceClasses) {
    const auto i = static_cast<std::size_t>(rc);
    if (q.resources[i] && *q.resources[i] > 0 &&
        (!h.inventories[i] || h.inventories[i]->free() < *q.resources[i]))
      out.emplace_back(Exclusion::Kind::not_enough_resource, std::string(to_string(rc)));
  }
  if (!q.include_down && kNow - h.last_seen_ms >= kDownAfter.count())
    out.emplace_back(Exclusion::Kind::down, "");
  return out;
}

Reason reason_of(const Exclusion& e) {
  switch (e.kind) {
    case Exclusion::Kind::missing_required:
    case Exclusion::Kind::has_forbidden: return {e.kind, e.trait};
    case Exclusion::Kind::none_of_any_of:
      return {e.kind, e.any_of[0] + "," + e.any_of[1] + "," + e.any_of[2]};
    case Exclusion::Kind::not_enough_resource: return {e.kind, std::string(to_string(e.resource))};
    case Exclusion::Kind::down: return {e.kind, ""};
  }
  return {};
}

Query random_query(std::mt19937_64& rng, int traits) {
  Query q;
  auto pick = [&] {
    return "T" + std::to_string(rng() % static_cast<unsigned>(traits + 2));
  };  // may be unknown
  for (unsigned i = 0, n = rng() % 3; i < n; ++i) q.required.push_back(pick());
  for (unsigned i = 0, n = rng() % 2; i < n; ++i)
    q.forbidden.push_back(rng() % 3 == 0 ? "CUSTOM_OP" : pick());
  if (rng() % 2 == 0) {
    std::set<std::string> g;
    while (g.size() < 3) g.insert(pick());
    q.any_of.emplace_back(g.begin(), g.end());
  }
  if (rng() % 3 == 0) q.resources[0] = static_cast<std::int64_t>(rng() % 40);
  if (rng() % 4 == 0) q.resources[1] = static_cast<std::int64_t>(rng() % 65536);
  q.include_down = rng() % 4 == 0;
  for (auto* v : {&q.required, &q.forbidden}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  std::erase_if(q.forbidden, [&](const std::string& f) {
    return std::binary_search(q.required.begin(), q.required.end(), f);
  });
  q.limit = 7;
  return q;
}

void expect_index_agrees(const HostIndex& index, const std::vector<HostRecord>& hosts, const Query& q) {
  std::set<std::string> want;
  std::map<Reason, std::size_t> want_first;
  for (const auto& h : hosts) {
    const auto reasons = reference_reasons(h, q);
    if (reasons.empty()) want.insert(h.name);
    if (!reasons.empty()) ++want_first[reasons[0]];
    auto e = index.explain_host(q, h.name, kNow);
    ASSERT_TRUE(e.ok());
    std::vector<Reason> got;
    for (const auto& r : e->reasons) got.push_back(reason_of(r));
    EXPECT_EQ(got, reasons) << h.name;
    EXPECT_EQ(e->matches, reasons.empty());
  }
  std::set<std::string> got;
  for (auto slot : index.match_all(q, kNow)) got.insert(*index.slot_name(slot));
  EXPECT_EQ(got, want);
  const auto a = index.query(q, kNow, true);
  EXPECT_EQ(a.matched, want.size());
  EXPECT_EQ(a.hosts.size(), std::min(want.size(), q.limit));
  for (const auto& m : a.hosts) EXPECT_TRUE(want.contains(m.name)) << m.name;
  std::map<Reason, std::size_t> got_first;
  for (const auto& e : a.excluded) got_first[reason_of(e)] += e.hosts;
  EXPECT_EQ(got_first, want_first);
}

}  // namespace

TEST(FleetIndex, MatchesAndExplanationsAgreeWithDirectEvaluation) {
  std::mt19937_64 rng(42);
  constexpr int kTraits = 40;
  std::vector<HostRecord> hosts;
  for (std::uint64_t n = 0; n < 3000; ++n) hosts.push_back(make_host(n, rng, kTraits));
  HostIndex index(kDownAfter);
  index.rebuild(hosts);
  EXPECT_EQ(index.host_count(), hosts.size());
  for (int i = 0; i < 150; ++i) {
    SCOPED_TRACE("query " + std::to_string(i));
    expect_index_agrees(index, hosts, random_query(rng, kTraits));
    if (::testing::Test::HasFailure()) break;
  }
}

TEST(FleetIndex, IncrementalChangesEqualARebuild) {
  std::mt19937_64 rng(7);
  constexpr int kTraits = 30;
  std::map<std::string, HostRecord> live;
  HostIndex index(kDownAfter);
  for (int step = 0; step < 4000; ++step) {
    const std::uint64_t n = rng() % 700;
    const std::string name = "host-" + std::to_string(n);
    if (rng() % 5 == 0) {
      EXPECT_EQ(index.remove(name), live.erase(name) == 1);
    } else {
      HostRecord h = make_host(n, rng, kTraits);
      h.generation = live.contains(name) ? live[name].generation + 1 : 1;
      EXPECT_TRUE(index.apply(h));
      live[name] = h;
    }
  }
  std::vector<HostRecord> all;
  for (const auto& [name, h] : live) all.push_back(h);
  HostIndex fresh(kDownAfter);
  fresh.rebuild(all);
  EXPECT_EQ(index.snapshot(), fresh.snapshot());
  std::vector<IndexedHost> want;
  for (const auto& h : all) want.push_back(to_indexed(h));
  EXPECT_EQ(index.snapshot(), want);
  for (int i = 0; i < 60; ++i) expect_index_agrees(index, all, random_query(rng, kTraits));
}

TEST(FleetIndex, OlderGenerationIsIgnoredAndIndexGenerationMoves) {
  std::mt19937_64 rng(1);
  HostIndex index(kDownAfter);
  HostRecord h = make_host(1, rng, 5);
  h.generation = 5;
  const auto g0 = index.generation();
  EXPECT_TRUE(index.apply(h));
  EXPECT_GT(index.generation(), g0);
  HostRecord old = h;
  old.generation = 4;
  old.traits.clear();
  EXPECT_FALSE(index.apply(old));
  EXPECT_EQ(index.snapshot().at(0).traits, h.traits);
  const auto g1 = index.generation();
  EXPECT_TRUE(index.remove(h.name));
  EXPECT_FALSE(index.remove(h.name));
  EXPECT_GT(index.generation(), g1);
  EXPECT_EQ(index.host_count(), 0U);
}

// A write's own record goes in without a re-read, unless the index already
// holds a later state: a higher generation (only the database can tell a
// later write from a re-registration) or the same one seen later.
TEST(FleetIndex, WrittenRecordsNeverMoveAHostBackwards) {
  std::mt19937_64 rng(1);
  HostIndex index(kDownAfter);
  HostRecord h = make_host(1, rng, 5);
  h.generation = 5;
  h.last_seen_ms = 1000;
  EXPECT_EQ(index.apply_written(h), HostIndex::Applied::applied);
  HostRecord later = h;
  later.last_seen_ms = 2000;
  EXPECT_EQ(index.apply_written(later), HostIndex::Applied::applied);
  EXPECT_EQ(index.apply_written(h), HostIndex::Applied::older_sighting);
  EXPECT_EQ(index.snapshot().at(0).last_seen_ms, 2000);
  HostRecord older = h;
  older.generation = 4;
  older.traits.clear();
  EXPECT_EQ(index.apply_written(older), HostIndex::Applied::older_generation);
  EXPECT_EQ(index.snapshot().at(0).traits, h.traits);
  HostRecord next = later;
  next.generation = 6;
  next.last_seen_ms = 1500;  // a change seen on another clock: the generation rules
  next.traits.resize(2);
  EXPECT_EQ(index.apply_written(next), HostIndex::Applied::applied);
  EXPECT_EQ(index.snapshot().at(0), to_indexed(next));
}

// Issue 19 item 4: a host renaming its traits at every report (a flood of
// new names) leaves only the names some host holds; a trait shared with
// another host stays; memory returns to where it was.
TEST(FleetIndex, TraitsNoHostHoldsAreForgottenAndTheirMemoryReused) {
  std::mt19937_64 rng(7);
  HostIndex index(kDownAfter);
  HostRecord steady = make_host(1, rng, 3);
  HostRecord flooder = make_host(2, rng, 0);
  flooder.traits = {{"COMPUTE_SHARED", TraitOwner::agent}};
  steady.traits.push_back({"COMPUTE_SHARED", TraitOwner::agent});
  std::sort(steady.traits.begin(), steady.traits.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  ASSERT_TRUE(index.apply(steady));
  ASSERT_TRUE(index.apply(flooder));
  const std::size_t traits_before = index.trait_count();
  // Names are made before the dropped ones are released, so the id tables
  // reach two rounds' worth; from then on they are reused, never grown.
  std::size_t peak = 0, settled = 0;
  for (int round = 0; round < 200; ++round) {
    flooder.traits.clear();
    for (int i = 0; i < 500; ++i)
      flooder.traits.push_back(
          {"COMPUTE_FLOOD_" + std::to_string(round) + "_" + std::to_string(i), TraitOwner::agent});
    flooder.traits.push_back({"COMPUTE_SHARED", TraitOwner::agent});
    std::sort(flooder.traits.begin(), flooder.traits.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    ++flooder.generation;
    ASSERT_TRUE(index.apply(flooder));
    EXPECT_EQ(index.trait_count(), traits_before + 500) << "round " << round;
    if (round == 4) settled = index.memory_bytes();
    if (round >= 4) peak = std::max(peak, index.memory_bytes());
  }
  EXPECT_LE(peak, settled + settled / 10) << "memory grew with every round of new names";
  flooder.traits = {{"COMPUTE_SHARED", TraitOwner::agent}};
  ++flooder.generation;
  ASSERT_TRUE(index.apply(flooder));
  EXPECT_EQ(index.trait_count(), traits_before);
  ASSERT_TRUE(index.remove(flooder.name));
  EXPECT_EQ(index.trait_count(), traits_before) << "COMPUTE_SHARED is still the steady host's";
  Query q;
  q.required = {"COMPUTE_SHARED"};
  EXPECT_EQ(index.query(q, now_ms(), false).matched, 1U);
  ASSERT_TRUE(index.remove(steady.name));
  EXPECT_EQ(index.trait_count(), 0U);
  // Names forgotten and made again behave as new ones.
  ASSERT_TRUE(index.apply(steady));
  EXPECT_EQ(index.snapshot().at(0).traits, steady.traits);
  EXPECT_EQ(index.query(q, now_ms(), false).matched, 1U);
}

TEST(FleetIndex, ExplainNamesEveryReasonAndUnknownTraits) {
  HostIndex index(kDownAfter);
  HostRecord h{uuid_for(1),
               "h1",
               1,
               kNow - 200000,
               "v",
               "u",
               {{"A", TraitOwner::agent}, {"CUSTOM_M", TraitOwner::operator_}},
               {}};
  h.inventories[0] = Inventory{4, 0, 1.0, 3};
  index.apply(h);
  Query q;
  q.required = {"A", "NOBODY_HAS_THIS"};
  q.forbidden = {"CUSTOM_M"};
  q.any_of = {{"X", "Y"}};
  q.resources[0] = 2;
  q.resources[2] = 1;
  auto e = index.explain_host(q, "h1", kNow);
  ASSERT_TRUE(e.ok());
  std::vector<std::string> text;
  for (const auto& r : e->reasons) text.push_back(r.describe());
  EXPECT_EQ(text, (std::vector<std::string>{"missing required trait NOBODY_HAS_THIS (no host has this trait)",
                                            "has forbidden trait CUSTOM_M", "has none of the traits in:X,Y",
                                            "not enough VCPU: asked 2, free 1",
                                            "not enough DISK_GB: asked 1, free none (not inventoried)",
                                            "down (last seen 200 s ago)"}));
  auto a = index.query(q, kNow, true);
  EXPECT_EQ(a.matched, 0U);
  ASSERT_EQ(a.excluded.size(), 1U);
  EXPECT_EQ(a.excluded[0].describe(), "missing required trait NOBODY_HAS_THIS (no host has this trait)");
  EXPECT_EQ(a.excluded[0].hosts, 1U);
  EXPECT_EQ(index.explain_host(q, "nope", kNow).error().code, Errc::not_found);
  Query ok;
  ok.required = {"A"};
  ok.include_down = true;
  auto m = index.query(ok, kNow, false);
  ASSERT_EQ(m.hosts.size(), 1U);
  EXPECT_EQ(m.hosts[0].uuid, uuid_for(1));
  EXPECT_EQ(m.hosts[0].free[0], 1);
  EXPECT_FALSE(m.hosts[0].free[2].has_value());
  EXPECT_EQ(m.hosts[0].last_seen_age_ms, 200000);
}

TEST(FleetIndex, RareTraitDrivenAndFullScanAgreeAtScale) {
  // 50,000 hosts: T0 on all, RARE on every 997th. The rare-first walk and
  // the full AND must give the same hosts.
  std::vector<HostRecord> hosts;
  for (std::uint64_t n = 0; n < 50000; ++n) {
    HostRecord h{uuid_for(n), "h" + std::to_string(n), 1, kNow, "", "", {{"T0", TraitOwner::agent}}, {}};
    if (n % 997 == 0) h.traits.push_back({"T_RARE", TraitOwner::agent});
    if (n % 2 == 0) h.traits.push_back({"T_EVEN", TraitOwner::agent});
    hosts.push_back(std::move(h));
  }
  HostIndex index(kDownAfter);
  index.rebuild(hosts);
  Query rare;
  rare.required = {"T0", "T_RARE"};
  rare.forbidden = {"T_EVEN"};
  std::size_t want = 0;
  for (std::uint64_t n = 0; n < 50000; n += 997) want += n % 2 != 0;
  EXPECT_EQ(index.match_all(rare, kNow).size(), want);
  EXPECT_EQ(index.query(rare, kNow, false).started_from, "T_RARE");
  Query common;
  common.required = {"T0", "T_EVEN"};
  EXPECT_EQ(index.query(common, kNow, false).started_from, "") << "dense traits: a full AND";
  EXPECT_EQ(index.match_all(common, kNow).size(), 25000U);
  Query any;
  any.any_of = {{"T_RARE", "NOT_THERE"}};
  EXPECT_EQ(index.match_all(any, kNow).size(), 50000U / 997 + 1);
  EXPECT_EQ(index.query(any, kNow, false).started_from, "in:T_RARE,NOT_THERE");
  EXPECT_LT(index.memory_bytes(), 50000U * 200);
}

// A host's trait ids are kept delta-encoded; every id comes back, in order,
// whatever its size (one to five bytes a delta).
TEST(FleetTraitList, EveryIdComesBackInOrder) {
  for (const std::vector<std::uint32_t>& ids :
       {std::vector<std::uint32_t>{}, std::vector<std::uint32_t>{0},
        std::vector<std::uint32_t>{0, 1, 2, 127, 128, 129},
        std::vector<std::uint32_t>{5, 300, 16383, 16384, 2097151, 2097152, 268435455, 268435456,
                                   4294967295U}}) {
    virtcap::fleet::TraitList list;
    list.assign(ids);
    EXPECT_EQ(list.ids(), ids);
  }
  std::mt19937_64 rng(3);
  std::vector<std::uint32_t> many;
  for (std::uint32_t id = 0; many.size() < 5000; id += 1 + static_cast<std::uint32_t>(rng() % 3000))
    many.push_back(id);
  virtcap::fleet::TraitList list;
  list.assign(many);
  EXPECT_EQ(list.ids(), many);
  list.clear();
  EXPECT_TRUE(list.ids().empty());
}
