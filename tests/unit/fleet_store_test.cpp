// The fleet store and core, the same suite on SQLite (a real file) and on a
// real throwaway PostgreSQL 15 cluster: generations, trait ownership, bad
// input changing nothing, migrations, restart, concurrency, and LISTEN/NOTIFY
// freshness between two index instances.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "fleet/fleet.h"
#include "support/fleet_fixture.h"
#include "support/test_support.h"

using namespace virtcap;
using namespace virtcap::fleet;
using namespace std::chrono_literals;

namespace virtcap::fleet {
// Readable failures for snapshot comparisons.
void PrintTo(const IndexedHost& h, std::ostream* os) {
  *os << h.name << " gen " << h.generation << " seen " << h.last_seen_ms << " traits [";
  for (const auto& t : h.traits) *os << t.name << (t.owner == TraitOwner::operator_ ? "(op) " : " ");
  *os << "] free [";
  for (const auto& f : h.free) *os << (f ? std::to_string(*f) : "-") << " ";
  *os << "]";
}
}  // namespace virtcap::fleet

namespace {

using Backend = virtcap::testing::FleetBackend;
using virtcap::testing::fleet_uuid;
AgentReport report_for(int n, std::vector<std::string> traits, std::int64_t vcpu_used = 0) {
  return virtcap::testing::fleet_report(n, std::move(traits), vcpu_used);
}

std::vector<std::string> trait_names(const HostRecord& h, TraitOwner owner) {
  std::vector<std::string> out;
  for (const auto& t : h.traits)
    if (t.owner == owner) out.push_back(t.name);
  return out;
}

class FleetStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    url_ = virtcap::testing::fleet_database_url(GetParam(), dir_);
    ASSERT_FALSE(url_.empty());
  }
  std::unique_ptr<Fleet> open_fleet() {
    auto f = Fleet::open({.database_url = url_, .host_down_after = 180s, .store = {}, .listen = true});
    EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message);
    return f.ok() ? std::move(*f) : nullptr;
  }
  // The database, the live index and a freshly rebuilt index agree exactly.
  void expect_all_agree(Fleet& fleet) {
    auto db = fleet.store().list_hosts();
    ASSERT_TRUE(db.ok()) << db.error().message;
    std::vector<IndexedHost> want;
    for (const auto& h : *db) want.push_back(to_indexed(h));
    EXPECT_EQ(fleet.index().snapshot(), want);
    HostIndex fresh(180s);
    fresh.rebuild(*db);
    EXPECT_EQ(fresh.snapshot(), want);
    auto drift = fleet.check_drift();
    ASSERT_TRUE(drift.ok());
    EXPECT_TRUE(drift->hosts.empty());
  }

  virtcap::testing::TempDir dir_{"virtcap-fleet"};
  std::string url_;
};

TEST_P(FleetStoreTest, ReportCreatesHostAndBumpsGenerationOnlyOnChange) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto r1 = fleet->report(report_for(1, {"COMPUTE_B", "COMPUTE_A", "COMPUTE_A"}));
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(r1->generation, 1);
  EXPECT_EQ(trait_names(*r1, TraitOwner::agent), (std::vector<std::string>{"COMPUTE_A", "COMPUTE_B"}));
  auto same = report_for(1, {"COMPUTE_A", "COMPUTE_B"});
  same.seen_at_ms = r1->last_seen_ms + 5000;
  auto r2 = fleet->report(same);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->generation, 1) << "a heartbeat with nothing new does not bump the generation";
  EXPECT_EQ(r2->last_seen_ms, same.seen_at_ms);
  auto r3 = fleet->report(report_for(1, {"COMPUTE_A"}, 3));
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->generation, 2);
  EXPECT_EQ(r3->inventories[0]->used, 3);
  Query q;
  q.required = {"COMPUTE_A"};
  q.resources[0] = 13;  // (8 - 0) * 2 - 3 = 13 free
  auto a = fleet->query(q, true);
  ASSERT_EQ(a.matched, 1U);
  EXPECT_EQ(a.hosts[0].free[0], 13);
  q.resources[0] = 14;
  a = fleet->query(q, true);
  EXPECT_EQ(a.matched, 0U);
  ASSERT_EQ(a.excluded.size(), 1U);
  EXPECT_EQ(a.excluded[0].describe(), "not enough VCPU: asked 14, free 13");
  expect_all_agree(*fleet);
}

// A report answers with the record it leaves in the database, built from
// the one read of the host before the write (not read back after it): a new
// host, a change, a heartbeat, operator traits kept, and an allocation ratio
// whose every digit matters (SQLite's text form of a REAL keeps only 15).
TEST_P(FleetStoreTest, AReportAnswersExactlyWhatTheDatabaseThenHolds) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto expect_stored = [&](const Result<HostRecord>& got) {
    ASSERT_TRUE(got.ok()) << got.error().message;
    auto stored = fleet->store().get_host(got->name);
    ASSERT_TRUE(stored.ok() && *stored);
    EXPECT_EQ(*got, **stored);
  };
  auto r = report_for(1, {"COMPUTE_B", "COMPUTE_A"});
  r.inventories[0]->allocation_ratio = 1.1 + 0.1;  // 1.2000000000000002
  r.inventories[2] = Inventory{100, 0, 1.0, 7};
  auto r1 = fleet->report(r);
  expect_stored(r1);
  auto op = fleet->add_operator_trait("host1", "CUSTOM_RACK_7", r1->generation);
  ASSERT_TRUE(op.ok()) << op.error().message;
  r.seen_at_ms += 1000;
  auto heartbeat = fleet->report(r);
  expect_stored(heartbeat);
  EXPECT_EQ(heartbeat->generation, op->generation)
      << "the ratio read back must compare equal to the one reported";
  r.traits = {"HW_CPU_X86_AVX2", "COMPUTE_A"};
  r.inventories[2].reset();
  r.agent_version = "0.2.0";
  auto changed = fleet->report(r);
  expect_stored(changed);
  EXPECT_EQ(changed->generation, op->generation + 1);
  EXPECT_EQ(trait_names(*changed, TraitOwner::operator_), (std::vector<std::string>{"CUSTOM_RACK_7"}));
  r.api_url = "http://10.0.0.1:9090";  // only the URL
  auto moved = fleet->report(r);
  expect_stored(moved);
  EXPECT_EQ(moved->generation, changed->generation + 1);
  r.inventories[0]->used = 5;  // only the usage: the traits are not rewritten
  auto used = fleet->report(r);
  expect_stored(used);
  EXPECT_EQ(used->generation, moved->generation + 1);
  r.traits = {"COMPUTE_A"};  // only the traits: the inventories are not rewritten
  auto fewer = fleet->report(r);
  expect_stored(fewer);
  EXPECT_EQ(fewer->generation, used->generation + 1);
  EXPECT_EQ(trait_names(*fewer, TraitOwner::agent), (std::vector<std::string>{"COMPUTE_A"}));
  expect_all_agree(*fleet);
}

TEST_P(FleetStoreTest, AgentReportNeverRemovesOperatorTraits) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto r1 = fleet->report(report_for(1, {"COMPUTE_A"}));
  ASSERT_TRUE(r1.ok());
  auto r2 = fleet->add_operator_trait("host1", "CUSTOM_MAINTENANCE", r1->generation);
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_EQ(r2->generation, 2);
  auto r3 = fleet->report(report_for(1, {"COMPUTE_Z"}));
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(trait_names(*r3, TraitOwner::operator_), (std::vector<std::string>{"CUSTOM_MAINTENANCE"}));
  EXPECT_EQ(trait_names(*r3, TraitOwner::agent), (std::vector<std::string>{"COMPUTE_Z"}));
  Query q;
  q.forbidden = {"CUSTOM_MAINTENANCE"};
  auto a = fleet->query(q, true);
  EXPECT_EQ(a.matched, 0U);
  ASSERT_EQ(a.excluded.size(), 1U);
  EXPECT_EQ(a.excluded[0].describe(), "has forbidden trait CUSTOM_MAINTENANCE");
  auto r4 = fleet->remove_operator_trait("host1", "CUSTOM_MAINTENANCE", r3->generation);
  ASSERT_TRUE(r4.ok());
  EXPECT_EQ(fleet->query(q, false).matched, 1U);
  EXPECT_EQ(fleet->remove_operator_trait("host1", "CUSTOM_MAINTENANCE", r4->generation).error().code,
            Errc::not_found);
  expect_all_agree(*fleet);
}

TEST_P(FleetStoreTest, BadInputAndStaleGenerationsChangeNothing) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto r1 = fleet->report(report_for(1, {"COMPUTE_A"}));
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(fleet->add_operator_trait("host1", "CUSTOM_X", r1->generation).ok());
  const auto before = fleet->store().list_hosts();
  ASSERT_TRUE(before.ok());
  const auto index_before = fleet->index().snapshot();
  const auto gen = (*before)[0].generation;

  auto expect_error = [&](Errc code, auto&& result, const std::string& needle) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code, code) << result.error().message;
    EXPECT_NE(result.error().message.find(needle), std::string::npos) << result.error().message;
  };
  expect_error(Errc::invalid_argument, fleet->report(report_for(1, {"COMPUTE_A", "bad trait"})),
               "\"bad trait\"");
  expect_error(Errc::invalid_argument, fleet->report(report_for(1, {"CUSTOM_Y"})), "CUSTOM_ traits belong");
  auto negative = report_for(1, {"COMPUTE_A"});
  negative.inventories[2] = Inventory{-5, 0, 1.0, 0};
  expect_error(Errc::invalid_argument, fleet->report(negative), "negative");
  auto bad_uuid = report_for(1, {"COMPUTE_A"});
  bad_uuid.uuid = "not-a-uuid";
  expect_error(Errc::invalid_argument, fleet->report(bad_uuid), "uuid");
  auto other_uuid = report_for(1, {"COMPUTE_B"});
  other_uuid.uuid = fleet_uuid(99);
  expect_error(Errc::conflict, fleet->report(other_uuid), "registered with uuid");
  expect_error(Errc::conflict, fleet->report(report_for(1, {"COMPUTE_B"}), gen - 1), "generation");
  expect_error(Errc::invalid_argument, fleet->add_operator_trait("host1", "COMPUTE_B", gen), "CUSTOM_");
  expect_error(Errc::invalid_argument, fleet->add_operator_trait("host1", "CUSTOM_bad", gen), "CUSTOM_bad");
  expect_error(Errc::conflict, fleet->add_operator_trait("host1", "CUSTOM_Z", gen - 1),
               "not " + std::to_string(gen - 1));
  expect_error(Errc::conflict, fleet->remove_operator_trait("host1", "CUSTOM_X", gen + 1), "generation");
  expect_error(Errc::not_found, fleet->add_operator_trait("nohost", "CUSTOM_Z", 1), "no host");
  expect_error(Errc::conflict, fleet->delete_host("host1", gen - 1), "generation");
  QueryParams many;
  for (int i = 0; i < 1000; ++i) many.emplace_back("required", "COMPUTE_A");
  expect_error(Errc::invalid_argument, parse_query(many), "1000 query parameters");
  expect_error(Errc::invalid_argument, parse_query({{"resources", "GPU:1"}}), "GPU");
  expect_error(Errc::invalid_argument, parse_query({{"resources", "VCPU:-2"}}), "negative");

  const auto after = fleet->store().list_hosts();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);
  EXPECT_EQ(fleet->index().snapshot(), index_before);
  // A trait nobody has is valid and matches nothing; the explanation says so.
  auto q = parse_query({{"required", "COMPUTE_A,CUSTOM_NOBODY"}});
  ASSERT_TRUE(q.ok());
  auto a = fleet->query(*q, true);
  EXPECT_EQ(a.matched, 0U);
  ASSERT_EQ(a.excluded.size(), 1U);
  EXPECT_EQ(a.excluded[0].describe(), "missing required trait CUSTOM_NOBODY (no host has this trait)");
}

// Issue 19 item 4: trait names no host holds any more leave the database.
// A name no host holds goes with the write that let go of it (a report that
// drops it, an operator trait removed, a host deleted), so the vocabulary
// follows the traits held; the drift pass's sweep catches any a write left.
TEST_P(FleetStoreTest, TraitNamesNoHostHoldsAreRemovedFromTheDatabase) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto raw =
      GetParam() == Backend::sqlite ? open_sqlite(dir_.sub("fleet.sqlite"), 1000ms) : open_postgres(url_);
  ASSERT_TRUE(raw.ok()) << raw.error().message;
  auto names = [&raw] {
    std::set<std::string> out;
    auto r = (*raw)->exec("SELECT name FROM fleet_traits", {});
    EXPECT_TRUE(r.ok());
    if (r.ok())
      for (const auto& row : r->rows) out.insert(row[0]);
    return out;
  };
  using Names = std::set<std::string>;
  ASSERT_TRUE(fleet->report(report_for(1, {"COMPUTE_A", "COMPUTE_OLD"})).ok());
  ASSERT_TRUE(fleet->report(report_for(2, {"COMPUTE_A"})).ok());
  ASSERT_TRUE(fleet->report(report_for(1, {"COMPUTE_A", "COMPUTE_NEW"})).ok());
  EXPECT_EQ(names(), (Names{"COMPUTE_A", "COMPUTE_NEW"}))
      << "COMPUTE_OLD went with the report that dropped it";
  auto h1 = fleet->store().get_host("host1");
  ASSERT_TRUE(h1.ok() && *h1);
  auto with_x = fleet->add_operator_trait("host1", "CUSTOM_X", (*h1)->generation);
  ASSERT_TRUE(with_x.ok());
  ASSERT_TRUE(fleet->remove_operator_trait("host1", "CUSTOM_X", with_x->generation).ok());
  EXPECT_EQ(names(), (Names{"COMPUTE_A", "COMPUTE_NEW"})) << "CUSTOM_X went with its removal";
  ASSERT_TRUE(fleet->delete_host("host1", std::nullopt).ok());
  EXPECT_EQ(names(), (Names{"COMPUTE_A"})) << "COMPUTE_NEW went with host1; COMPUTE_A is host2's";
  // A name a write left (here: put there by hand) goes at the next sweep.
  ASSERT_TRUE((*raw)->exec("INSERT INTO fleet_traits (name) VALUES ('COMPUTE_LEFT')", {}).ok());
  auto gone = fleet->store().forget_unheld_traits();
  ASSERT_TRUE(gone.ok()) << gone.error().message;
  EXPECT_EQ(*gone, 1U);
  EXPECT_EQ(*fleet->store().forget_unheld_traits(), 0U);
  // A name forgotten is made again by the next report that carries it.
  ASSERT_TRUE(fleet->report(report_for(2, {"COMPUTE_A", "COMPUTE_OLD"})).ok());
  EXPECT_EQ(names(), (Names{"COMPUTE_A", "COMPUTE_OLD"}));
  expect_all_agree(*fleet);
}

TEST_P(FleetStoreTest, DeleteAndRegisterAgain) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  ASSERT_TRUE(fleet->report(report_for(1, {"COMPUTE_A"})).ok());
  auto r = fleet->report(report_for(1, {"COMPUTE_B"}));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->generation, 2);
  ASSERT_TRUE(fleet->delete_host("host1", r->generation).ok());
  EXPECT_EQ(fleet->index().host_count(), 0U);
  EXPECT_EQ(fleet->delete_host("host1", std::nullopt).error().code, Errc::not_found);
  auto again = report_for(1, {"COMPUTE_C"});
  again.uuid = fleet_uuid(2);  // reinstalled: a new uuid is fine once deleted
  auto r2 = fleet->report(again);
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_EQ(r2->generation, 1);
  expect_all_agree(*fleet);
}

TEST_P(FleetStoreTest, DownHostsAreExcludedWithTheirAge) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  auto old = report_for(1, {"COMPUTE_A"});
  old.seen_at_ms = now_ms() - 600000;
  ASSERT_TRUE(fleet->report(old).ok());
  ASSERT_TRUE(fleet->report(report_for(2, {"COMPUTE_A"})).ok());
  Query q;
  q.required = {"COMPUTE_A"};
  const auto now = old.seen_at_ms + 600000;
  auto a = fleet->query(q, true, now);
  ASSERT_EQ(a.matched, 1U);
  EXPECT_EQ(a.hosts[0].name, "host2");
  ASSERT_EQ(a.excluded.size(), 1U);
  EXPECT_EQ(a.excluded[0].describe(), "down (last seen 600 s ago)");
  q.include_down = true;
  EXPECT_EQ(fleet->query(q, false, now).matched, 2U);
}

TEST_P(FleetStoreTest, MigrationsAndRestartGiveIdenticalAnswers) {
  Answer before;
  std::vector<IndexedHost> snap;
  Query q;
  q.required = {"COMPUTE_A"};
  q.forbidden = {"CUSTOM_M"};
  q.limit = 50;  // all of them: the same hosts, listed by name
  const auto now = now_ms();
  {
    auto fleet = open_fleet();
    ASSERT_TRUE(fleet);
    EXPECT_EQ(*fleet->store().schema_version(), latest_fleet_schema_version());
    for (int n = 1; n <= 20; ++n)
      ASSERT_TRUE(fleet->report(report_for(n, {"COMPUTE_A", "COMPUTE_" + std::to_string(n % 3)})).ok());
    ASSERT_TRUE(fleet->add_operator_trait("host7", "CUSTOM_M", 1).ok());
    before = fleet->query(q, true, now);
    snap = fleet->index().snapshot();
  }
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  EXPECT_EQ(fleet->index().snapshot(), snap);
  auto after = fleet->query(q, true, now);
  EXPECT_EQ(after.matched, before.matched);
  ASSERT_EQ(after.hosts.size(), before.hosts.size());
  for (std::size_t i = 0; i < after.hosts.size(); ++i) EXPECT_EQ(after.hosts[i].name, before.hosts[i].name);
  ASSERT_EQ(after.excluded.size(), 1U);
  EXPECT_EQ(after.excluded[0].hosts, 1U);
  fleet.reset();
  // A schema newer than this binary is refused, and left as it is.
  auto raw =
      GetParam() == Backend::sqlite ? open_sqlite(dir_.sub("fleet.sqlite"), 1000ms) : open_postgres(url_);
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE((*raw)->exec("UPDATE fleet_schema SET version = 99", {}).ok());
  auto refused = Fleet::open({.database_url = url_, .host_down_after = 180s, .store = {}, .listen = false});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::store_error);
  EXPECT_NE(refused.error().message.find("newer than this binary"), std::string::npos)
      << refused.error().message;
  auto v = (*raw)->exec("SELECT version FROM fleet_schema", {});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->rows.at(0).at(0), "99");
}

// A write the index did not see (another process on SQLite; a replica with
// LISTEN off on PostgreSQL) shows as drift, and a rebuild repairs it.
TEST_P(FleetStoreTest, DriftCheckFindsWritesTheIndexMissedAndRebuildRepairs) {
  auto f = Fleet::open({.database_url = url_, .host_down_after = 180s, .store = {}, .listen = false});
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto& fleet = **f;
  auto r = fleet.report(report_for(1, {"COMPUTE_A"}));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(fleet.report(report_for(2, {"COMPUTE_A"})).ok());
  auto other = open_fleet_store(url_);
  ASSERT_TRUE(other.ok()) << other.error().message;
  // Changed, deleted and created behind the index's back: the first is found
  // in a page, the second only by what no page had, the third only in a page.
  ASSERT_TRUE((*other)->add_operator_trait("host1", "CUSTOM_BEHIND_ITS_BACK", r->generation).ok());
  ASSERT_TRUE((*other)->delete_host("host2", std::nullopt).ok());
  ASSERT_TRUE((*other)->report(report_for(3, {"COMPUTE_B"})).ok());
  auto drift = fleet.check_drift();
  ASSERT_TRUE(drift.ok());
  EXPECT_EQ(drift->hosts, (std::vector<std::string>{"host1", "host2", "host3"}));
  EXPECT_EQ(drift->db_hosts, 2U);
  EXPECT_EQ(drift->index_hosts, 2U);
  const auto gen = fleet.index().generation();
  ASSERT_TRUE(fleet.rebuild().ok());
  EXPECT_GT(fleet.index().generation(), gen);
  drift = fleet.check_drift();
  ASSERT_TRUE(drift.ok());
  EXPECT_TRUE(drift->hosts.empty());
  expect_all_agree(fleet);
}

// A rebuild and a drift check read the database a page at a time (keyset by
// name): every host exactly once, whole, whatever the page size, including a
// fleet that is an exact multiple of it; a visitor's error stops the scan.
TEST_P(FleetStoreTest, ScanReadsEveryHostOnceAPageAtATime) {
  auto store = open_fleet_store(url_);
  ASSERT_TRUE(store.ok()) << store.error().message;
  std::vector<HostRecord> hosts;
  for (int n = 0; n < 2100; ++n) {
    // Names whose byte order and a locale's order differ ("Host-" sorts
    // first in bytes), and a shared prefix of different lengths.
    HostRecord h{fleet_uuid(n),
                 (n % 3 == 0 ? "Host-" : "host-") + std::to_string(n),
                 1,
                 1000 + n,
                 "0.1.0",
                 "",
                 {},
                 {}};
    h.traits.push_back({"COMPUTE_" + std::to_string(n % 7), TraitOwner::agent});
    if (n % 5 == 0) h.traits.push_back({"CUSTOM_" + std::to_string(n % 11), TraitOwner::operator_});
    std::sort(h.traits.begin(), h.traits.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    h.inventories[0] = Inventory{n + 1, 0, 1.0, n % 4};
    hosts.push_back(std::move(h));
  }
  ASSERT_TRUE((*store)->import_hosts(hosts).ok());
  std::sort(hosts.begin(), hosts.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const std::size_t page : {std::size_t{1000}, std::size_t{700}, std::size_t{2100}, std::size_t{13}}) {
    std::vector<HostRecord> seen;
    std::size_t pages = 0, largest = 0;
    auto st = (*store)->scan_hosts(page, [&](std::vector<HostRecord>& p) {
      ++pages;
      largest = std::max(largest, p.size());
      std::move(p.begin(), p.end(), std::back_inserter(seen));
      return Status{};
    });
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_EQ(pages, (hosts.size() + page - 1) / page) << "page " << page;
    EXPECT_EQ(largest, page);
    std::sort(seen.begin(), seen.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    EXPECT_TRUE(seen == hosts) << "page " << page << ": " << seen.size() << " hosts read";
  }
  int calls = 0;
  auto stopped = (*store)->scan_hosts(100, [&](std::vector<HostRecord>&) -> Status {
    ++calls;
    return make_error(Errc::internal, "stop here");
  });
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.error().message, "stop here");
  EXPECT_EQ(calls, 1);
}

// Agents report and operators add/remove their own CUSTOM_ traits, all at
// once, for a bounded time. At the end the database, the live index(es) and a
// rebuilt index agree exactly, every agent's last report is what is stored,
// and no operator trait was lost or resurrected.
TEST_P(FleetStoreTest, ConcurrentReportsAndOperatorEditsLoseNothing) {
  auto fleet = open_fleet();
  ASSERT_TRUE(fleet);
  std::unique_ptr<Fleet> replica;
  if (GetParam() == Backend::postgres) replica = open_fleet();
  constexpr int kAgents = 4, kHostsPerAgent = 2, kOperators = 2;
  for (int n = 0; n < kAgents * kHostsPerAgent; ++n)
    ASSERT_TRUE(fleet->report(report_for(n, {"COMPUTE_A"})).ok());
  const auto end = std::chrono::steady_clock::now() + 3s;
  std::map<int, std::vector<std::string>>
      last_report;  // host -> agent traits, written by its own agent thread
  std::map<std::pair<int, std::string>, bool>
      op_state;  // (host, trait) -> present, by its own operator thread
  std::mutex results_mu;
  std::atomic<int> errors{0}, conflicts{0}, writes{0};
  std::vector<std::thread> threads;
  for (int a = 0; a < kAgents; ++a)
    threads.emplace_back([&, a] {
      std::mt19937 rng(static_cast<unsigned>(a));
      while (std::chrono::steady_clock::now() < end) {
        const int n = a * kHostsPerAgent + static_cast<int>(rng() % kHostsPerAgent);
        std::vector<std::string> traits;
        for (int t = 0; t < 6; ++t)
          if (rng() % 2) traits.push_back("COMPUTE_T" + std::to_string(t));
        auto r = fleet->report(report_for(n, traits, static_cast<std::int64_t>(rng() % 8)));
        if (!r.ok()) {
          errors++;
          ADD_FAILURE() << r.error().message;
          return;
        }
        writes++;
        std::lock_guard lock(results_mu);
        last_report[n] = trait_names(*r, TraitOwner::agent);
      }
    });
  for (int o = 0; o < kOperators; ++o)
    threads.emplace_back([&, o] {
      std::mt19937 rng(static_cast<unsigned>(100 + o));
      Fleet& via =
          (replica && o == 1) ? *replica : *fleet;  // on PostgreSQL, one operator writes via the replica
      while (std::chrono::steady_clock::now() < end) {
        const int n = static_cast<int>(rng() % (kAgents * kHostsPerAgent));
        const std::string trait = "CUSTOM_OP" + std::to_string(o) + "_" + std::to_string(rng() % 3);
        bool present = false;
        {
          std::lock_guard lock(results_mu);
          present = op_state[{n, trait}];
        }
        auto h = via.store().get_host("host" + std::to_string(n));
        if (!h.ok() || !*h) {
          errors++;
          return;
        }
        auto r = present ? via.remove_operator_trait("host" + std::to_string(n), trait, (*h)->generation)
                         : via.add_operator_trait("host" + std::to_string(n), trait, (*h)->generation);
        if (!r.ok()) {
          if (r.error().code == Errc::conflict) {
            conflicts++;
            continue;  // stale: re-read and retry
          }
          errors++;
          ADD_FAILURE() << r.error().message;
          return;
        }
        writes++;
        std::lock_guard lock(results_mu);
        op_state[{n, trait}] = !present;
      }
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(errors.load(), 0);
  EXPECT_GT(writes.load(), 20);
  auto db = fleet->store().list_hosts();
  ASSERT_TRUE(db.ok());
  for (const auto& h : *db) {
    const int n = std::stoi(h.name.substr(4));
    if (last_report.contains(n)) {
      EXPECT_EQ(trait_names(h, TraitOwner::agent), last_report[n]) << h.name;
    }
    std::vector<std::string> want_ops;
    for (const auto& [key, present] : op_state)
      if (key.first == n && present) want_ops.push_back(key.second);
    std::sort(want_ops.begin(), want_ops.end());
    EXPECT_EQ(trait_names(h, TraitOwner::operator_), want_ops) << h.name;
  }
  // On PostgreSQL each index also applies the other's writes from NOTIFY,
  // asynchronously: both must converge on the database (within 5 s).
  std::vector<IndexedHost> want;
  for (const auto& h : *db) want.push_back(to_indexed(h));
  for (Fleet* f : {fleet.get(), replica.get()}) {
    if (f == nullptr) continue;
    EXPECT_TRUE(f->wait_for_index([&](const HostIndex& i) { return i.snapshot() == want; },
                                  std::chrono::steady_clock::now() + 5s))
        << "an index did not converge on the database within 5 s";
  }
  expect_all_agree(*fleet);
  std::printf("[          ] %d writes, %d stale-generation conflicts retried\n", writes.load(),
              conflicts.load());
}

INSTANTIATE_TEST_SUITE_P(Backends, FleetStoreTest, ::testing::Values(Backend::sqlite, Backend::postgres),
                         [](const auto& info) { return virtcap::testing::backend_name(info.param); });

TEST(FleetPostgres, TwoIndexesOnOneDatabaseSeeEachOthersWritesWithinOneSecond) {
  const auto url = virtcap::testing::pg_database_url();
  ASSERT_FALSE(url.empty());
  auto a = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = true});
  auto b = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = true});
  ASSERT_TRUE(a.ok() && b.ok());
  auto r = (*a)->report(report_for(1, {"COMPUTE_A"}));
  ASSERT_TRUE(r.ok());
  auto has_host = [](const HostIndex& i) { return i.host_count() == 1; };
  ASSERT_TRUE((*b)->wait_for_index(has_host, std::chrono::steady_clock::now() + 1s))
      << "replica b did not see the new host within 1 s";
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE((*a)->add_operator_trait("host1", "CUSTOM_MAINTENANCE", r->generation).ok());
  Query q;
  q.forbidden = {"CUSTOM_MAINTENANCE"};
  auto excluded = [&q](const HostIndex& i) { return i.query(q, now_ms(), false).matched == 0; };
  ASSERT_TRUE((*b)->wait_for_index(excluded, start + 1s))
      << "replica b did not see the operator trait within 1 s";
  EXPECT_GE((*b)->refreshes_from_notifications(), 1U);
  // And the other way round, for a delete.
  ASSERT_TRUE((*b)->delete_host("host1", std::nullopt).ok());
  auto empty = [](const HostIndex& i) { return i.host_count() == 0; };
  ASSERT_TRUE((*a)->wait_for_index(empty, std::chrono::steady_clock::now() + 1s))
      << "replica a did not see the delete within 1 s";
}

// A replica skips the notification of a version its index already holds
// (its own write, applied as it answered) and re-reads every other: another
// replica's write, and a heartbeat (same generation, later last_seen).
TEST(FleetPostgres, AReplicaDoesNotReReadItsOwnWritesButSeesEveryOther) {
  const auto url = virtcap::testing::pg_database_url();
  ASSERT_FALSE(url.empty());
  auto a = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = true});
  auto b = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = true});
  ASSERT_TRUE(a.ok() && b.ok());
  auto report = report_for(1, {"COMPUTE_A"});
  auto r1 = (*a)->report(report);
  ASSERT_TRUE(r1.ok());
  report.seen_at_ms += 7000;
  auto heartbeat = (*a)->report(report);
  ASSERT_TRUE(heartbeat.ok());
  ASSERT_EQ(heartbeat->generation, r1->generation);
  auto seen_late = [&](const HostIndex& i) {
    auto s = i.snapshot();
    return s.size() == 1 && s[0].last_seen_ms == report.seen_at_ms;
  };
  EXPECT_TRUE((*b)->wait_for_index(seen_late, std::chrono::steady_clock::now() + 5s))
      << "b skipped a's heartbeat (same generation, later last_seen)";
  ASSERT_TRUE((*a)->add_operator_trait("host1", "CUSTOM_RACK", r1->generation).ok());
  // Notifications arrive in commit order: once a sees b's write, it has
  // handled its own three.
  ASSERT_TRUE((*b)->report(report_for(2, {"COMPUTE_A"})).ok());
  auto both = [](const HostIndex& i) { return i.host_count() == 2; };
  ASSERT_TRUE((*a)->wait_for_index(both, std::chrono::steady_clock::now() + 5s));
  EXPECT_EQ((*a)->notifications_already_held(), 3U) << "a re-read its own writes";
  EXPECT_EQ((*a)->refreshes_from_notifications(), 1U) << "only b's write is read";
  auto trait_of_a = [&](const HostIndex& i) {
    auto s = i.snapshot();
    return s.size() == 2 && s[0].generation == r1->generation + 1;
  };
  EXPECT_TRUE((*b)->wait_for_index(trait_of_a, std::chrono::steady_clock::now() + 5s))
      << "b missed a's operator trait";
}

TEST(FleetNotice, AVersionedNoticeIsReadAndAnythingElseIsAHostName) {
  const Notice n = parse_notice(write_notice("host-7.example", 12, 1764000000123));
  EXPECT_EQ(n.host, "host-7.example");
  EXPECT_EQ(n.generation, 12);
  EXPECT_EQ(n.last_seen_ms, 1764000000123);
  for (const char* p : {"host1", "host1 5", "host1 x 1", "host1 5 1 extra", " 5 1", "host1 5 ", "host1  5 1",
                        "*", "host1 99999999999999999999 1"}) {
    const Notice old = parse_notice(p);
    EXPECT_EQ(old.host, p) << "read as a name, never skipped";
    EXPECT_FALSE(old.generation) << p;
    EXPECT_FALSE(old.last_seen_ms) << p;
  }
}

TEST(FleetPostgres, ListenerWaitsWithADeadlineAndFetchesNotifications) {
  const auto url = virtcap::testing::pg_database_url();
  ASSERT_FALSE(url.empty());
  auto l = PgListener::open(url, {"chan_one"});
  ASSERT_TRUE(l.ok()) << l.error().message;
  const auto t0 = std::chrono::steady_clock::now();
  auto none = (*l)->wait(t0 + 100ms);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
  auto c = open_postgres(url);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->exec("SELECT pg_notify('chan_one', 'hello'), pg_notify('chan_one', 'world')", {}).ok());
  std::vector<std::string> got;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (got.size() < 2) {
    auto n = (*l)->wait(deadline);
    ASSERT_TRUE(n.ok());
    ASSERT_FALSE(n->empty()) << "notifications did not arrive within 2 s";
    for (const auto& x : *n) got.push_back(x.channel + ":" + x.payload);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"chan_one:hello", "chan_one:world"}));
  std::thread waker([&] { (*l)->interrupt(); });
  auto woken = (*l)->wait(std::chrono::steady_clock::now() + 30s);
  waker.join();
  ASSERT_TRUE(woken.ok());
  EXPECT_TRUE(woken->empty());
}

}  // namespace

namespace {

// Fault injection: the server kills the replica's LISTEN connection. The
// replica reconnects and reloads, so a write made meanwhile still shows.
TEST(FleetPostgres, ReplicaRecoversWhenItsListenConnectionIsKilled) {
  const auto url = virtcap::testing::pg_database_url();
  ASSERT_FALSE(url.empty());
  auto a = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = false});
  auto b = Fleet::open({.database_url = url, .host_down_after = 180s, .store = {}, .listen = true});
  ASSERT_TRUE(a.ok() && b.ok());
  auto admin = open_postgres(url);
  ASSERT_TRUE(admin.ok());
  auto killed = (*admin)->exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
      "AND query LIKE 'LISTEN%'",
      {});
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  ASSERT_EQ(killed->rows.size(), 1U) << "expected exactly one LISTEN connection (replica b's)";
  auto r = (*a)->report(report_for(7, {"COMPUTE_AFTER_KILL"}));
  ASSERT_TRUE(r.ok());
  auto seen = [](const HostIndex& i) { return i.host_count() == 1; };
  EXPECT_TRUE((*b)->wait_for_index(seen, std::chrono::steady_clock::now() + 10s))
      << "replica b did not recover from losing its LISTEN connection within 10 s";
}

}  // namespace
