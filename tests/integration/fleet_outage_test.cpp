// The fleet outlives its database (issue 19, item 3): real `virtcap fleet
// serve` processes on a real PostgreSQL 15 cluster of the test's own, which
// the test restarts (`pg_ctl restart -m fast`), stops for 30 s, or cuts off
// by killing the TCP proxy (tests/support/tcp_proxy.h) a replica reaches it
// through. While the database is away: reads answer from the index with its
// age (header X-Virtcap-Index-Age, body index_current/index_age_s), writes
// answer 503 with Retry-After and a reason, /healthz 503, /livez 200,
// /metrics the seconds unreachable. Once it is back, writes and freshness
// recover within 5 s, with no restart (docs/fleet.md, "When the database is
// away"). Every wait polls an observable condition against a deadline.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "fleet/wire.h"
#include "support/agent_process.h"
#include "support/fleet_fixture.h"
#include "support/postgres_cluster.h"
#include "support/raw_http.h"
#include "support/tcp_proxy.h"

using namespace virtcap;
using namespace virtcap::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kRecoveryBound = 5s;  // the bound once the database is back

double since_s(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One request over a fresh loopback connection: status, headers, body.
struct Http {
  int status = 0;
  std::string head;
  json body;
  std::string text;
  std::string header(const std::string& name) const {  // "" when absent
    std::string lower_head = head, key = "\r\n" + name + ":";
    for (auto* s : {&lower_head, &key})
      for (auto& c : *s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto at = lower_head.find(key);
    if (at == std::string::npos) return "";
    const auto from = head.find_first_not_of(' ', at + key.size());
    return head.substr(from, head.find("\r\n", from) - from);
  }
};

Http http(int port, const std::string& method, const std::string& path, const json* body = nullptr) {
  const std::string b = body ? body->dump() : "";
  const auto a = raw_exchange(
      port, request_text(method, path, body ? "Content-Type: application/json\r\n" : "", b), 15s);
  Http h;
  h.status = a.status();
  const auto end = a.text.find("\r\n\r\n");
  h.head = a.text.substr(0, end);
  h.text = a.body();
  h.body = json::parse(h.text, nullptr, false);
  return h;
}

json host_report(int n) { return fleet::to_json(fleet_report(n, {"COMPUTE_A"})); }

Http put_host(int port, int n) {
  const json r = host_report(n);
  return http(port, "PUT", "/v1/hosts/host" + std::to_string(n), &r);
}

// The value of a metric line "NAME VALUE" in a Prometheus text page (-1: absent).
double metric(const std::string& page, const std::string& name) {
  const auto at = page.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atof(page.c_str() + at + name.size() + 2);
}

// Re-checks `pred` until it holds or `limit` passes; the time it took, or
// nullopt.
template <class Pred>
std::optional<double> poll_until(Pred pred, std::chrono::milliseconds limit) {
  const auto t0 = Clock::now();
  while (Clock::now() - t0 < limit) {
    if (pred()) return since_s(t0);
    std::this_thread::sleep_for(50ms);  // the polling interval, not a synchronisation
  }
  return pred() ? std::optional<double>(since_s(t0)) : std::nullopt;
}

struct Replica {
  std::unique_ptr<Agent> process;
  int port = 0;
};

class FleetOutage {
 public:
  FleetOutage() {
    auto pg = PgCluster::start();
    if (!pg.ok()) {
      problem = "cannot start a PostgreSQL 15 cluster: " + pg.error().message;
      return;
    }
    pg_ = std::move(*pg);
    auto db = pg_->create_database();
    if (!db.ok()) {
      problem = db.error().message;
      return;
    }
    db_url = *db;
  }
  std::string problem, db_url;
  PgCluster& pg() { return *pg_; }

  // A real `virtcap fleet serve` on `database`.
  Replica start(const std::string& name, const std::string& database) {
    fs::create_directories(dir_.sub(name));
    const std::string cfg = dir_.write(
        name + ".toml", "[DEFAULT]\nstate_path = \"" + dir_.sub(name) +
                            "\"\n[fleet_service]\nanonymous_role = \"operator\"\nlisten = \"127.0.0.1:0\"\n"
                            "host_reports_per_minute = 0\n"  // writes back to back
                            "database = \"" +
                            database + "\"\n");
    Replica r;
    r.process = std::make_unique<Agent>(Agent::fleet_service(cfg));
    r.port = r.process->running() ? r.process->port() : 0;
    EXPECT_TRUE(r.process->running()) << r.process->exit_output().err;
    return r;
  }

 private:
  TempDir dir_{"virtcap-fleet-outage"};
  std::unique_ptr<PgCluster> pg_;
};

// What a replica answers while its database is unreachable: reads from the
// index (`hosts` of them) with its age, writes 503 with Retry-After and a
// reason, /healthz 503 with the reason, /livez 200, /metrics the seconds.
void expect_outage_answers(const Replica& r, int hosts, const std::string& who) {
  SCOPED_TRACE(who);
  const auto health = http(r.port, "GET", "/healthz");
  EXPECT_EQ(health.status, 503) << health.text;
  EXPECT_EQ(health.body.value("status", ""), "unavailable") << health.text;
  EXPECT_NE(health.body.value("reason", "").find("unreachable"), std::string::npos) << health.text;
  EXPECT_FALSE(health.header("Retry-After").empty()) << health.head;
  EXPECT_EQ(http(r.port, "GET", "/livez").status, 200);

  const auto write = put_host(r.port, 1);
  EXPECT_EQ(write.status, 503) << write.text;
  EXPECT_EQ(write.body["error"].value("code", ""), "store_unavailable") << write.text;
  EXPECT_NE(write.body["error"].value("message", "").find("unreachable"), std::string::npos) << write.text;
  EXPECT_FALSE(write.header("Retry-After").empty()) << write.head;

  const auto read = http(r.port, "GET", "/v1/hosts?required=COMPUTE_A&explain=true");
  EXPECT_EQ(read.status, 200) << read.text;
  EXPECT_EQ(read.body.value("matched", -1), hosts) << read.text;
  EXPECT_EQ(read.body.value("index_current", true), false) << read.text;
  EXPECT_GT(std::atof(read.header("X-Virtcap-Index-Age").c_str()), 0.0) << read.head;
  EXPECT_EQ(read.body["database"].value("reachable", true), false) << read.text;

  const auto m = http(r.port, "GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_GT(metric(m.text, "virtcap_fleet_database_unreachable_seconds"), 0.0) << m.text;
  EXPECT_EQ(metric(m.text, "virtcap_fleet_database_up"), 0.0) << m.text;
  EXPECT_EQ(metric(m.text, "virtcap_fleet_index_current"), 0.0) << m.text;
}

// From `back` (the database reachable again): every replica's writes answer
// 200 and its index is current within kRecoveryBound (all polled together).
// Returns each one's seconds to its first 200. Every write answer meanwhile
// is 200 or 503, never 500.
std::vector<double> expect_recovery(const std::vector<const Replica*>& rs, Clock::time_point back) {
  std::vector<double> first_200(rs.size(), -1), current(rs.size(), -1);
  std::vector<int> other;
  const auto limit = back + kRecoveryBound + 10s;
  auto done = [&] { return std::count(current.begin(), current.end(), -1) == 0; };
  while (!done() && Clock::now() < limit) {
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (first_200[i] < 0) {
        const int s = put_host(rs[i]->port, 1).status;
        if (s == 200)
          first_200[i] = since_s(back);
        else if (s != 503)
          other.push_back(s);
      }
      if (first_200[i] >= 0 && current[i] < 0 && http(rs[i]->port, "GET", "/healthz").status == 200 &&
          http(rs[i]->port, "GET", "/v1/hosts").body.value("index_current", false))
        current[i] = since_s(back);
    }
    std::this_thread::sleep_for(50ms);  // the polling interval, not a synchronisation
  }
  const double bound = std::chrono::duration<double>(kRecoveryBound).count();
  for (std::size_t i = 0; i < rs.size(); ++i) {
    SCOPED_TRACE("replica " + std::to_string(i));
    EXPECT_GE(first_200[i], 0.0) << "writes never recovered";
    EXPECT_LE(first_200[i], bound) << "writes recovered too late";
    EXPECT_GE(current[i], 0.0) << "/healthz or the index never recovered";
    EXPECT_LE(current[i], bound) << "/healthz or the index recovered too late";
    const auto m = http(rs[i]->port, "GET", "/metrics");
    EXPECT_EQ(metric(m.text, "virtcap_fleet_database_unreachable_seconds"), 0.0) << m.text;
    EXPECT_GE(metric(m.text, "virtcap_fleet_database_recoveries_total"), 1.0) << m.text;
  }
  EXPECT_TRUE(other.empty()) << "a write answered " << other.front() << " (expected 200 or 503)";
  return first_200;
}

// A write through `writer` is seen by `reader` within `limit`: freshness.
void expect_seen(const Replica& writer, const Replica& reader, int host, std::chrono::milliseconds limit) {
  ASSERT_EQ(put_host(writer.port, host).status, 200);
  EXPECT_TRUE(poll_until(
      [&] {
        const auto a = http(reader.port, "GET", "/v1/hosts");
        for (const auto& h : a.body["hosts"])
          if (h["name"] == "host" + std::to_string(host)) return a.body.value("index_current", false);
        return false;
      },
      limit))
      << "host" << host << " written through one replica is not in the other's current index";
}

// Replicas a and b on the Unix socket, host1 and host2 written through a
// and seen by b.
void start_two(FleetOutage& f, Replica& a, Replica& b) {
  ASSERT_TRUE(f.problem.empty()) << f.problem;
  a = f.start("a", f.db_url);
  b = f.start("b", f.db_url);
  ASSERT_TRUE(a.port && b.port);
  ASSERT_EQ(put_host(a.port, 1).status, 200);
  expect_seen(a, b, 2, 5s);
}

TEST(Fault, FleetWritesAndFreshnessRecoverWithinFiveSecondsOfAPostgresRestart) {
  FleetOutage f;
  Replica a, b;
  ASSERT_NO_FATAL_FAILURE(start_two(f, a, b));

  const auto t0 = Clock::now();
  ASSERT_TRUE(f.pg().pg_ctl("restart").ok());
  const auto back = Clock::now();
  const auto r = expect_recovery({&a, &b}, back);
  expect_seen(a, b, 3, kRecoveryBound);
  expect_seen(b, a, 4, kRecoveryBound);
  std::printf("pg_ctl restart -m fast took %.2f s; first 200 write after it: replica a %.3f s, b %.3f s\n",
              std::chrono::duration<double>(back - t0).count(), r[0], r[1]);
}

TEST(Fault, FleetAnswersFromItsIndexWhilePostgresIsStoppedFor30sThenRecovers) {
  FleetOutage f;
  Replica a, b;
  ASSERT_NO_FATAL_FAILURE(start_two(f, a, b));

  ASSERT_TRUE(f.pg().pg_ctl("stop").ok());
  const auto stopped = Clock::now();
  for (const auto* r : {&a, &b})
    ASSERT_TRUE(poll_until([&] { return http(r->port, "GET", "/healthz").status == 503; }, 5s))
        << "/healthz still 200 with the database stopped";
  // The outage lasts 30 s (the figure); the answers are checked
  // throughout, about once a second.
  double last_unreachable = 0;
  int rounds = 0;
  while (since_s(stopped) < 30) {
    expect_outage_answers(a, 2, "replica a");
    expect_outage_answers(b, 2, "replica b");
    const double u =
        metric(http(a.port, "GET", "/metrics").text, "virtcap_fleet_database_unreachable_seconds");
    EXPECT_GE(u, last_unreachable) << "the unreachable time went back";
    last_unreachable = u;
    if (HasFailure()) break;
    ++rounds;
    std::this_thread::sleep_for(1s);  // the outage's length, not a synchronisation
  }
  EXPECT_GT(last_unreachable, 25.0);
  // The CLI shows the index's age with --explain.
  auto cli = proc::run(
      {VIRTCAP_BINARY, "hosts", "--explain", "--server", "http://127.0.0.1:" + std::to_string(a.port)});
  ASSERT_TRUE(cli.ok());
  EXPECT_EQ(cli->exit_code, 0) << cli->err;
  EXPECT_NE(cli->out.find("s behind at most (the fleet database is unreachable"), std::string::npos)
      << cli->out;

  ASSERT_TRUE(f.pg().pg_ctl("start").ok());
  const auto back = Clock::now();
  const auto r = expect_recovery({&a, &b}, back);
  expect_seen(a, b, 3, kRecoveryBound);
  expect_seen(b, a, 4, kRecoveryBound);
  std::printf(
      "postgres stopped %.1f s (%d checks of both replicas); first 200 write after the start: "
      "replica a %.3f s, b %.3f s\n",
      std::chrono::duration<double>(back - stopped).count(), rounds, r[0], r[1]);
}

// Replica b reaches the database through a TCP proxy; a stays on the Unix
// socket. Killing the proxy cuts b off while a keeps writing: b answers
// from its index, which misses a's writes and says so; when the proxy is
// back, b reconnects and reloads, and shows them.
TEST(Fault, FleetReplicaCutOffByANetworkFailureReloadsItsIndexWhenItIsBack) {
  FleetOutage f;
  ASSERT_TRUE(f.problem.empty()) << f.problem;
  std::string error;
  auto proxy = TcpProxy::start(f.pg().socket_path(), 0, &error);
  ASSERT_TRUE(proxy) << error;
  const int proxy_port = proxy->port();
  auto a = f.start("a", f.db_url);
  auto b = f.start("b", f.pg().tcp_url(PgCluster::database_name(f.db_url), proxy_port));
  ASSERT_TRUE(a.port && b.port);
  ASSERT_EQ(put_host(b.port, 1).status, 200);
  expect_seen(b, a, 2, 5s);
  expect_seen(a, b, 3, 5s);

  proxy->kill();
  const auto cut = Clock::now();
  ASSERT_TRUE(poll_until([&] { return http(b.port, "GET", "/healthz").status == 503; }, 5s))
      << "/healthz still 200 with the network cut";
  EXPECT_EQ(http(a.port, "GET", "/healthz").status, 200) << "a is not cut off";
  // a writes host4 meanwhile: b cannot know, and says its index is behind.
  ASSERT_EQ(put_host(a.port, 4).status, 200);
  while (since_s(cut) < 5) {
    expect_outage_answers(b, 3, "replica b");
    if (HasFailure()) break;
    std::this_thread::sleep_for(1s);  // the outage's length, not a synchronisation
  }

  proxy = TcpProxy::start(f.pg().socket_path(), proxy_port, &error);
  ASSERT_TRUE(proxy) << error;
  const auto back = Clock::now();
  const double rb = expect_recovery({&b}, back)[0];
  EXPECT_TRUE(poll_until([&] { return http(b.port, "GET", "/v1/hosts").body.value("matched", 0) == 4; }, 1s))
      << "b's index did not reload a's write made during the cut: " << http(b.port, "GET", "/v1/hosts").text;
  expect_seen(a, b, 5, kRecoveryBound);
  std::printf("network cut %.1f s; b's first 200 write after the proxy is back: %.3f s\n",
              std::chrono::duration<double>(back - cut).count(), rb);
}

}  // namespace
