// Fleet queries: Placement-style SQL on PostgreSQL 15 (a) against the
// in-memory index (b) and against GET /v1/hosts?...&limit=100 end to end over
// HTTP on an in-process fleet service (c), same data, same run, answers
// checked equal; plus the index's memory at 1,000,000 hosts and the
// NOTIFY-to-visible latency.
//
// Starts its own throwaway PostgreSQL cluster unless VIRTCAP_PG_URL names an
// empty scratch database. Fleet: 100,000 hosts, 400 traits, fixed seed:
// 10 common traits on 85-95% of hosts, 200 rare ones on under 1%, 190 in
// between; 20-60 traits per host, mean about 35.
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>

#include "fleet/fleet.h"
#include "fleet/service.h"
#include "fleet_data.h"
#include "http/client.h"
#include "ratio.h"
#include "support/postgres_cluster.h"

namespace {

using namespace virtcap;
using namespace virtcap::fleet;
using namespace std::chrono_literals;

constexpr int kHosts = 100000;
using bench::kCommon;
using bench::kRare;
using bench::kSeed;
using bench::kTraits;
using bench::make_host;
using bench::trait_name;
using bench::trait_probabilities;

struct BenchQuery {
  std::string name;
  Query q;
  std::string sql;  // Placement-style: one join per required, NOT EXISTS per forbidden, EXISTS for any-of
  std::vector<SqlValue> params;
};

std::map<std::string, std::int64_t> g_trait_ids;

BenchQuery make_query(std::string name, std::vector<std::string> req, std::vector<std::string> forb,
                      std::vector<std::string> any) {
  BenchQuery b{std::move(name), {}, "SELECT h.id FROM fleet_hosts h", {}};
  auto param = [&b](const std::string& t) {
    b.params.push_back(g_trait_ids.at(t));
    return "$" + std::to_string(b.params.size());
  };
  for (std::size_t i = 0; i < req.size(); ++i) {
    const std::string a = "r" + std::to_string(i);
    b.sql += " JOIN fleet_host_traits " + a + " ON " + a + ".host_id = h.id AND " + a +
             ".trait_id = " + param(req[i]);
  }
  std::string where;
  for (std::size_t i = 0; i < forb.size(); ++i) {
    const std::string a = "f" + std::to_string(i);
    where += std::string(where.empty() ? " WHERE" : " AND") +
             " NOT EXISTS (SELECT 1 FROM fleet_host_traits " + a + " WHERE " + a + ".host_id = h.id AND " +
             a + ".trait_id = " + param(forb[i]) + ")";
  }
  if (!any.empty()) {
    std::string in;
    for (const auto& t : any) in += (in.empty() ? "" : ", ") + param(t);
    where += std::string(where.empty() ? " WHERE" : " AND") +
             " EXISTS (SELECT 1 FROM fleet_host_traits a WHERE a.host_id = h.id AND a.trait_id IN (" + in +
             "))";
  }
  b.sql += where;
  b.q.required = std::move(req);
  b.q.forbidden = std::move(forb);
  if (!any.empty()) b.q.any_of.push_back(std::move(any));
  for (auto* v : {&b.q.required, &b.q.forbidden}) std::sort(v->begin(), v->end());
  for (auto& g : b.q.any_of) std::sort(g.begin(), g.end());
  b.q.include_down = false;  // the index also checks liveness; the SQL does not
  return b;
}

// (c)'s request: the query in Placement's syntax, limit 100.
std::string http_path(const Query& q) {
  std::string req;
  for (const auto& t : q.required) req += (req.empty() ? "" : ",") + t;
  for (const auto& t : q.forbidden) req += (req.empty() ? "!" : ",!") + t;
  std::string path = "/v1/hosts?limit=100";
  if (!req.empty()) path += "&required=" + req;
  for (const auto& grp : q.any_of) {
    std::string in;
    for (const auto& t : grp) in += (in.empty() ? "" : ",") + t;
    path += "&required=in:" + in;
  }
  return path;
}

struct World {
  std::unique_ptr<testing::PgCluster> cluster;
  std::unique_ptr<FleetService> service;  // (c), its own index, same database
  std::string service_url;
  std::string url;
  std::unique_ptr<Fleet> fleet;
  std::unique_ptr<SqlConn> sql;
  std::vector<BenchQuery> queries;
  std::int64_t now = 0;
};
World g;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fleet_bench: %s\n", what.c_str());
  std::exit(1);
}

void load_fleet() {
  if (const char* env = std::getenv("VIRTCAP_PG_URL"); env != nullptr && *env != '\0') {
    g.url = env;
  } else {
    auto c = testing::PgCluster::start();
    if (!c.ok()) die("cannot start PostgreSQL: " + c.error().message);
    g.cluster = std::move(*c);
    auto db = g.cluster->create_database();
    if (!db.ok()) die(db.error().message);
    g.url = *db;
  }
  auto store = open_fleet_store(g.url);
  if (!store.ok()) die(store.error().message);
  auto existing = (*store)->list_hosts();
  if (!existing.ok() || !existing->empty()) die("VIRTCAP_PG_URL must name an empty scratch database");
  std::mt19937_64 rng(kSeed);
  const auto p = trait_probabilities(rng);
  g.now = now_ms();
  std::vector<HostRecord> hosts;
  std::size_t links = 0;
  for (int n = 0; n < kHosts; ++n) {
    hosts.push_back(make_host(n, rng, p, g.now));
    links += hosts.back().traits.size();
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (auto st = (*store)->import_hosts(hosts); !st.ok()) die(st.error().message);
  auto sql = open_postgres(g.url);
  if (!sql.ok()) die(sql.error().message);
  g.sql = std::move(*sql);
  (void)g.sql->exec("ANALYZE", {});
  const auto t1 = std::chrono::steady_clock::now();
  auto fleet = Fleet::open({.database_url = g.url, .host_down_after = 3600s, .store = {}, .listen = true});
  if (!fleet.ok()) die(fleet.error().message);
  g.fleet = std::move(*fleet);
  const auto t2 = std::chrono::steady_clock::now();
  std::printf(
      "fleet: %d hosts, %zu host-trait links (mean %.1f per host), load %.1f s, index rebuild from "
      "PostgreSQL %.2f s, index %.1f MiB\n",
      kHosts, links, static_cast<double>(links) / kHosts, std::chrono::duration<double>(t1 - t0).count(),
      std::chrono::duration<double>(t2 - t1).count(),
      static_cast<double>(g.fleet->index().memory_bytes()) / (1 << 20));
  ServiceOptions so;
  so.fleet = {.database_url = g.url, .host_down_after = 3600s, .store = {}, .listen = true};
  so.http.listen = "127.0.0.1:0";
  so.auth.anonymous = fleet::Role::operator_;  // measured without credentials, as before
  auto svc = FleetService::open(so);
  if (!svc.ok()) die(svc.error().message);
  auto port = (*svc)->bind();
  if (!port.ok()) die(port.error().message);
  if (auto st = (*svc)->start(); !st.ok()) die(st.error().message);
  g.service = std::move(*svc);
  g.service_url = "http://127.0.0.1:" + std::to_string(*port);
  auto ids = g.sql->exec("SELECT name, id FROM fleet_traits", {});
  if (!ids.ok()) die(ids.error().message);
  for (const auto& row : ids->rows) g_trait_ids[row[0]] = std::stoll(row[1]);
  g.queries.push_back(make_query("Q1", {trait_name(0), trait_name(1)}, {}, {}));
  g.queries.push_back(
      make_query("Q2", {trait_name(2), trait_name(kCommon + 5)}, {trait_name(kCommon + kRare + 3)}, {}));
  g.queries.push_back(
      make_query("Q3", {trait_name(3)}, {trait_name(kCommon + kRare + 7)},
                 {trait_name(kCommon + 11), trait_name(kCommon + 12), trait_name(kCommon + 13)}));
}

std::vector<std::int64_t> run_sql(const BenchQuery& b) {
  auto r = g.sql->exec(b.sql, b.params);
  if (!r.ok()) die(r.error().message);
  std::vector<std::int64_t> out;
  out.reserve(r->rows.size());
  for (const auto& row : r->rows) out.push_back(std::stoll(row[0]));
  return out;
}

// Untimed: both answers as host names must be equal.
void check_equal() {
  auto names = g.sql->exec("SELECT id, name FROM fleet_hosts", {});
  if (!names.ok()) die(names.error().message);
  std::map<std::int64_t, std::string> by_id;
  for (const auto& row : names->rows) by_id[std::stoll(row[0])] = row[1];
  for (const auto& b : g.queries) {
    std::set<std::string> a, ix;
    for (auto id : run_sql(b)) a.insert(by_id.at(id));
    for (auto slot : g.fleet->index().match_all(b.q, g.now)) ix.insert(*g.fleet->index().slot_name(slot));
    if (a != ix)
      die(b.name + ": SQL and index answers differ (" + std::to_string(a.size()) + " vs " +
          std::to_string(ix.size()) + ")");
    http::Client c(g.service_url);
    auto r = c.request("GET", http_path(b.q));
    if (!r.ok()) die(b.name + " over HTTP: " + r.error().message);
    std::set<std::string> listed;
    for (const auto& h : (*r)["hosts"]) listed.insert(h["name"].get<std::string>());
    if ((*r)["matched"].get<std::size_t>() != a.size() ||
        listed.size() != std::min<std::size_t>(100, a.size()) ||
        !std::includes(a.begin(), a.end(), listed.begin(), listed.end()))
      die(b.name + ": the HTTP answer differs from SQL's");
    std::printf("%s: %zu of %d hosts match (SQL, index and HTTP agree)\n", b.name.c_str(), a.size(), kHosts);
  }
}

void BM_Sql(benchmark::State& state, std::size_t i) {
  std::size_t n = 0;
  for (auto _ : state) n = run_sql(g.queries[i]).size();
  state.counters["matches"] = static_cast<double>(n);
}

void BM_Index(benchmark::State& state, std::size_t i) {
  std::size_t n = 0;
  for (auto _ : state) {
    auto v = g.fleet->index().match_all(g.queries[i].q, g.now);
    n = v.size();
    benchmark::DoNotOptimize(v.data());
  }
  state.counters["matches"] = static_cast<double>(n);
}

void BM_IndexLimit100Explain(benchmark::State& state, std::size_t i) {
  Query q = g.queries[i].q;
  q.limit = 100;
  for (auto _ : state) {
    auto a = g.fleet->index().query(q, g.now, true);
    benchmark::DoNotOptimize(a.matched);
  }
}

// (c): the whole request over HTTP (keep-alive), parse and answer, limit 100.
void BM_Http(benchmark::State& state, std::size_t i) {
  http::Client c(g.service_url);
  const std::string path = http_path(g.queries[i].q);
  for (auto _ : state) {
    auto r = c.call("GET", path);
    if (!r.ok() || r->status != 200) {
      state.SkipWithError("GET /v1/hosts failed");
      break;
    }
    benchmark::DoNotOptimize(r->raw.data());
  }
}

// Bytes the process has allocated with malloc and not freed.
std::size_t malloc_in_use() { return mallinfo2().uordblks + mallinfo2().hblkhd; }

// Built straight from generated records (no database), one host at a time.
void report_million_host_memory() {
  std::mt19937_64 rng(kSeed + 1);
  const auto p = trait_probabilities(rng);
  const std::size_t used0 = malloc_in_use();
  auto index = std::make_unique<HostIndex>(3600s);
  for (int n = 0; n < 1000000; ++n) index->apply(make_host(n, rng, p, g.now));
  const std::size_t used1 = malloc_in_use();
  std::printf(
      "MEMORY index at 1,000,000 hosts, %zu traits: %.1f MiB counted by the index, %.1f MiB allocated "
      "(malloc in use grew) (goal < 200 MiB)\n",
      index->trait_count(), static_cast<double>(index->memory_bytes()) / (1 << 20),
      static_cast<double>(used1 - used0) / (1 << 20));
}

// A second writer (as another replica would) adds a trait; how long until
// this process's index shows it, counted from the writer's COMMIT.
void report_notify_latency() {
  auto writer = open_fleet_store(g.url, {});
  if (!writer.ok()) die(writer.error().message);
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    const std::string host = "host-" + std::to_string(i * 4999);
    const std::string trait = "CUSTOM_BENCH_" + std::to_string(i);
    auto h = (*writer)->get_host(host);
    if (!h.ok() || !*h) die("no " + host);
    if (auto r = (*writer)->add_operator_trait(host, trait, (*h)->generation); !r.ok())
      die(r.error().message);
    const auto committed = std::chrono::steady_clock::now();
    Query q;
    q.required = {trait};
    q.include_down = true;
    if (!g.fleet->wait_for_index([&](const HostIndex& ix) { return ix.query(q, g.now, false).matched == 1; },
                                 committed + 5s))
      die("a trait written by another connection was not visible within 5 s");
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - committed).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("LATENCY NOTIFY-to-visible over %zu changes: median %.2f ms, max %.2f ms (goal < 100 ms)\n",
              ms.size(), ms[ms.size() / 2], ms.back());
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  load_fleet();
  check_equal();
  std::vector<virtcap::bench::Pair> pairs;
  for (std::size_t i = 0; i < g.queries.size(); ++i) {
    const std::string n = g.queries[i].name;
    benchmark::RegisterBenchmark(("BM_PlacementSql_" + n).c_str(), BM_Sql, i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("BM_Index_" + n).c_str(), BM_Index, i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("BM_IndexLimit100Explain_" + n).c_str(), BM_IndexLimit100Explain, i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("BM_HttpLimit100_" + n).c_str(), BM_Http, i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    pairs.push_back({"BM_PlacementSql_" + n + "/real_time", "BM_Index_" + n + "/real_time",
                     n + ": Placement SQL vs index, all ids (goal >= 100x)"});
    pairs.push_back({"BM_PlacementSql_" + n + "/real_time", "BM_HttpLimit100_" + n + "/real_time",
                     n + ": Placement SQL vs GET /v1/hosts limit=100 over HTTP (goal >= 10x)"});
  }
  const int rc = virtcap::bench::run_with_ratios(argc, argv, pairs);
  report_notify_latency();
  g.service.reset();
  g.fleet.reset();
  report_million_host_memory();
  return rc;
}
