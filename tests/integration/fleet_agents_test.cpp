// Real processes: two `virtcap agent`s (libvirt test driver, fake driver)
// reporting to one `virtcap fleet serve` on its SQLite default, driven with
// the real `virtcap hosts` / `virtcap traits` commands; and two in-process
// fleet-service replicas on one real PostgreSQL, under 8 reporters and
// operators writing concurrently over HTTP.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "fleet/service.h"
#include "fleet/wire.h"
#include "http/client.h"
#include "support/agent_process.h"
#include "support/fleet_fixture.h"

using namespace virtcap;
using namespace virtcap::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// Re-checks `pred` until it holds or `limit` passes (then fails with `what`).
// Time alone makes a silent host down: host_down_after past its last report.
// Waits until exactly then, by the service's own measure of the host's age
// (a report that was already on its way when the agent died moves the
// instant: then it waits again, at most `attempts` times). True once the
// service calls the host down.
bool wait_until_down(http::Client& fleet, const std::string& host, std::chrono::milliseconds down_after,
                     int attempts = 3) {
  for (int i = 0; i < attempts; ++i) {
    auto h = fleet.request("GET", "/v1/hosts/" + host);
    if (!h.ok()) {
      ADD_FAILURE() << "GET host " << host << ": " << h.error().message;
      return false;
    }
    if ((*h)["down"] == true) return true;
    const auto age = std::chrono::milliseconds(std::llround((*h)["last_seen_age_s"].get<double>() * 1000.0));
    std::this_thread::sleep_for(down_after - age + 5ms);  // not a poll: the instant it turns down
  }
  auto h = fleet.request("GET", "/v1/hosts/" + host);
  if (h.ok() && (*h)["down"] == true) return true;
  ADD_FAILURE() << host << " not down after " << attempts << " waits of host_down_after past its last report";
  return false;
}

std::string agent_config(TempDir& dir, const std::string& host, const std::string& driver,
                         const std::string& fleet) {
  return dir.write(host + ".toml",
                   "[DEFAULT]\nstate_path = \"" + dir.sub(host) + "\"\nhost = \"" + host +
                       "\"\nperiodic_fuzzy_delay = 0\n[compute]\ndriver = \"" + driver +
                       "\"\n[libvirt]\nuri = \"test:///default\"\n[api]\nlisten = \"127.0.0.1:0\"\n"
                       "[fleet]\nurl = \"" +
                       fleet + "\"\nreport_interval = 1\n");
}

// `virtcap ARGS... --server URL`: exit code and stdout.
std::pair<int, std::string> cli(const std::vector<std::string>& args, const std::string& server) {
  std::vector<std::string> argv = {VIRTCAP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--server", server});
  auto out = proc::run(argv);
  EXPECT_TRUE(out.ok());
  return out.ok() ? std::pair{out->exit_code, out->out + out->err} : std::pair{-1, std::string()};
}

// A host as the fleet service holds it, without what time changes.
json stable(json host) {
  host.erase("last_seen_age_s");
  host.erase("down");
  return host;
}

TEST(FleetAgents, TwoAgentsReportOperatorTraitsSurviveKillMeansDownRestartGivesSameAnswers) {
  TempDir dir("virtcap-fleet-agents");
  fs::create_directories(dir.sub("fleet"));
  const std::string fleet_cfg = dir.write(
      "fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                        "\"\n[fleet_service]\nanonymous_role = \"operator\"\nlisten = \"127.0.0.1:0\"\n"
                        "host_down_after = 5\ndrift_check_interval = 1\n");
  auto fleet = std::make_unique<Agent>(Agent::fleet_service(fleet_cfg));
  ASSERT_TRUE(fleet->running()) << fleet->exit_output().err;
  const std::string url = fleet->url();
  for (const char* h : {"lv-host", "fake-host"}) fs::create_directories(dir.sub(h));
  const auto lv_cfg = agent_config(dir, "lv-host", "libvirt", url);
  const auto fake_cfg = agent_config(dir, "fake-host", "fake", url);
  auto lv = std::make_unique<Agent>(lv_cfg);
  auto fake = std::make_unique<Agent>(fake_cfg);
  ASSERT_TRUE(lv->running()) << lv->exit_output().err;
  ASSERT_TRUE(fake->running()) << fake->exit_output().err;
  ASSERT_TRUE(lv->wait_for_log("periodic task 'fleet_report' ran")) << lv->exit_output().err;
  ASSERT_TRUE(fake->wait_for_log("periodic task 'fleet_report' ran")) << fake->exit_output().err;

  http::Client fc(url);
  // Traits appear: exactly the set each agent's capabilities render.
  for (auto* a : {lv.get(), fake.get()}) {
    auto caps = a->client().request("GET", "/v1/capabilities");
    ASSERT_TRUE(caps.ok()) << caps.error().message;
    const std::string name = a == lv.get() ? "lv-host" : "fake-host";
    auto host = fc.request("GET", "/v1/hosts/" + name);
    ASSERT_TRUE(host.ok()) << host.error().message;
    json names = json::array();
    for (const auto& t : (*host)["traits"]) names.push_back(t["name"]);
    EXPECT_EQ(names, (*caps)["traits"]) << name;
    EXPECT_EQ((*host)["api_url"], a->url());
    EXPECT_TRUE((*host)["inventories"].contains("VCPU"));
  }
  // An operator trait, set with the real CLI, survives the agent's restart and its reports.
  auto [rc, out] = cli({"traits", "add", "fake-host", "CUSTOM_PINNED"}, url);
  ASSERT_EQ(rc, 0) << out;
  const auto uuid_before = (*fc.request("GET", "/v1/hosts/fake-host"))["uuid"];
  ASSERT_EQ(fake->stop().exit_code, 0);
  fake = std::make_unique<Agent>(fake_cfg);
  ASSERT_TRUE(fake->wait_for_log("periodic task 'fleet_report' ran")) << fake->exit_output().err;
  auto host = fc.request("GET", "/v1/hosts/fake-host");
  ASSERT_TRUE(host.ok());
  EXPECT_EQ((*host)["uuid"], uuid_before) << "the host uuid persists in the state directory";
  EXPECT_TRUE((*host)["traits"].dump().find(R"({"name":"CUSTOM_PINNED","owner":"operator"})") !=
              std::string::npos)
      << host->dump();
  auto [rc2, out2] = cli({"hosts", "--forbid", "CUSTOM_PINNED", "--explain", "-f", "json"}, url);
  ASSERT_EQ(rc2, 0) << out2;
  auto j = json::parse(out2);
  EXPECT_EQ(j["matched"], 1);
  EXPECT_EQ(j["hosts"][0]["name"], "lv-host");
  EXPECT_EQ(j["excluded"][0]["message"], "has forbidden trait CUSTOM_PINNED");

  // kill -9 of an agent: its host is down after host_down_after (5 s), with that reason.
  lv->send(SIGKILL);
  ASSERT_TRUE(wait_until_down(fc, "lv-host", 5s));
  const auto answer = fc.request("GET", "/v1/hosts?explain=true");
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  const json& last = *answer;
  EXPECT_EQ(last["matched"], 1) << last.dump();
  EXPECT_EQ(last["hosts"][0]["name"], "fake-host") << "the live agent keeps reporting";
  ASSERT_EQ(last["excluded"].size(), 1U);
  EXPECT_NE(last["excluded"][0]["message"].get<std::string>().find("down (last seen"), std::string::npos);
  auto [rc3, out3] = cli({"hosts", "--explain", "--host", "lv-host"}, url);
  EXPECT_EQ(rc3, 0);
  EXPECT_NE(out3.find("down (last seen"), std::string::npos) << out3;

  // Restarting the fleet service gives identical answers (the live agent's
  // failed reports meanwhile are retried; the agent keeps serving).
  const auto before_lv = stable(*fc.request("GET", "/v1/hosts/lv-host"));
  const auto before_fake = stable(*fc.request("GET", "/v1/hosts/fake-host"));
  ASSERT_EQ(fleet->stop().exit_code, 0);
  ASSERT_TRUE(fake->wait_for_log("fleet report to " + url + " failed")) << fake->exit_output().err;
  EXPECT_TRUE(fake->client().request("GET", "/healthz").ok()) << "a failing report never blocks the agent";
  // Same port again: the agent's [fleet] url names it.
  const std::string port = url.substr(url.rfind(':') + 1);
  const std::string again_cfg = dir.write(
      "fleet2.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                         "\"\n[fleet_service]\nanonymous_role = \"operator\"\nlisten = \"127.0.0.1:" + port +
                         "\"\nhost_down_after = 5\n");
  fleet = std::make_unique<Agent>(Agent::fleet_service(again_cfg));
  ASSERT_TRUE(fleet->running()) << fleet->exit_output().err;
  EXPECT_EQ(stable(*fc.request("GET", "/v1/hosts/lv-host")), before_lv);
  EXPECT_EQ(stable(*fc.request("GET", "/v1/hosts/fake-host")), before_fake);
  ASSERT_TRUE(fake->wait_for_log("succeeded again after")) << fake->exit_output().err;
}

// ---- replicas on one PostgreSQL ---------------------------------------------

struct Replica {
  std::unique_ptr<fleet::FleetService> svc;
  std::string url;
};

Replica start_replica(const std::string& db) {
  fleet::ServiceOptions o;
  o.fleet.database_url = db;
  o.auth.anonymous = fleet::Role::operator_;  // a test bench: no credential needed
  o.http.listen = "127.0.0.1:0";
  o.http.max_body_bytes = fleet::kMaxReportBodyBytes;
  o.host_reports_per_minute = 0;  // each host reports back to back here
  auto s = fleet::FleetService::open(o);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  if (!s.ok()) return {};
  auto port = (*s)->bind();
  EXPECT_TRUE(port.ok() && (*s)->start().ok());
  return {std::move(*s), "http://127.0.0.1:" + std::to_string(port.ok() ? *port : 0)};
}

json report(int n, const std::vector<std::string>& traits, int used = 0) {
  return fleet::to_json(fleet_report(n, traits, used));
}

bool has_trait(const fleet::HostIndex& idx, const std::string& host, const std::string& trait) {
  for (const auto& h : idx.snapshot())
    if (h.name == host)
      for (const auto& t : h.traits)
        if (t.name == trait) return true;
  return false;
}

TEST(FleetReplicas, TraitAddedThroughOneReplicaIsSeenByTheOtherWithinOneSecond) {
  const std::string db = pg_database_url();
  ASSERT_FALSE(db.empty());
  auto a = start_replica(db), b = start_replica(db);
  ASSERT_TRUE(a.svc && b.svc);
  http::Client ca(a.url), cb(b.url);
  const json r1 = report(1, {"COMPUTE_A"});
  auto put = ca.request("PUT", "/v1/hosts/host1", &r1);
  ASSERT_TRUE(put.ok()) << put.error().message;
  ASSERT_TRUE(b.svc->fleet().wait_for_index([](const auto& i) { return i.host_count() == 1; },
                                            std::chrono::steady_clock::now() + 1s));
  const json g = {{"generation", (*put)["generation"]}};
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(ca.request("PUT", "/v1/hosts/host1/traits/CUSTOM_SEEN", &g).ok());
  EXPECT_TRUE(b.svc->fleet().wait_for_index(
      [](const auto& i) { return has_trait(i, "host1", "CUSTOM_SEEN"); }, t0 + 1s))
      << "replica b did not see the trait within 1 s";
  auto q = cb.request("GET", "/v1/hosts?required=CUSTOM_SEEN");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)["matched"], 1);
  std::printf("trait visible in the other replica after %.1f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

// 8 reporters and 2 operators (each owning half the hosts, so the expected
// operator traits are exact) write through two replicas for
// VIRTCAP_FLEET_STRESS_SECONDS (default 30; docs/testing.md). At the end the
// database and both indexes agree exactly and no operator trait was lost.
TEST(LoadFleet, EightReportersAndOperatorsThroughTwoReplicasLoseNothing) {
  const char* env = std::getenv("VIRTCAP_FLEET_STRESS_SECONDS");
  const int seconds = env && *env ? std::max(1, std::atoi(env)) : 30;
  const std::string db = pg_database_url();
  ASSERT_FALSE(db.empty());
  auto a = start_replica(db), b = start_replica(db);
  ASSERT_TRUE(a.svc && b.svc);
  constexpr int kHosts = 8;
  {
    http::Client c(a.url);
    for (int h = 0; h < kHosts; ++h) {
      const json r = report(h, {"COMPUTE_A"});
      ASSERT_TRUE(c.request("PUT", "/v1/hosts/host" + std::to_string(h), &r).ok());
    }
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::atomic<std::uint64_t> reports{0}, writes{0}, conflicts{0}, failures{0};
  std::vector<std::set<std::string>> expected(kHosts);
  std::vector<std::thread> threads;
  for (int h = 0; h < kHosts; ++h)
    threads.emplace_back([&, h] {
      http::Client c(h % 2 ? a.url : b.url);
      std::mt19937 rng(h);
      while (std::chrono::steady_clock::now() < end) {
        std::vector<std::string> traits = {"COMPUTE_A"};
        if (rng() % 2) traits.push_back("COMPUTE_B" + std::to_string(rng() % 4));
        const json r = report(h, traits, static_cast<int>(rng() % 16));
        auto res = c.call("PUT", "/v1/hosts/host" + std::to_string(h), &r);
        if (!res.ok() || res->status != 200) ++failures;
        ++reports;
      }
    });
  for (int op = 0; op < 2; ++op)
    threads.emplace_back([&, op] {
      http::Client c(op ? a.url : b.url);
      std::mt19937 rng(100 + op);
      while (std::chrono::steady_clock::now() < end) {
        const int h = 2 * static_cast<int>(rng() % (kHosts / 2)) + op;
        const std::string trait = "CUSTOM_OP" + std::to_string(rng() % 3);
        const bool add = !expected[h].count(trait);
        const std::string path = "/v1/hosts/host" + std::to_string(h);
        auto host = c.call("GET", path);
        if (!host.ok() || host->status != 200) {
          ++failures;
          continue;
        }
        json g = {{"generation", host->body["generation"]}};
        for (;;) {
          auto w = c.call(add ? "PUT" : "DELETE", path + "/traits/" + trait, &g);
          if (!w.ok()) {
            ++failures;
            break;
          }
          if (w->status == 409) {
            ++conflicts;
            g["generation"] = w->body["error"]["generation"];
            continue;
          }
          if (w->status == 200) {
            add ? (void)expected[h].insert(trait) : (void)expected[h].erase(trait);
            ++writes;
          } else {
            ++failures;
          }
          break;
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0U);
  EXPECT_GT(writes.load(), 0U);
  std::printf("%d s: %llu reports, %llu operator writes, %llu 409s retried\n", seconds,
              static_cast<unsigned long long>(reports.load()), static_cast<unsigned long long>(writes.load()),
              static_cast<unsigned long long>(conflicts.load()));
  auto all = a.svc->fleet().store().list_hosts();
  ASSERT_TRUE(all.ok());
  std::vector<fleet::IndexedHost> want;
  for (const auto& h : *all) want.push_back(fleet::to_indexed(h));
  for (auto* r : {&a, &b})
    EXPECT_TRUE(r->svc->fleet().wait_for_index([&](const auto& i) { return i.snapshot() == want; },
                                               std::chrono::steady_clock::now() + 5s))
        << "an index does not match the database";
  ASSERT_EQ(all->size(), static_cast<std::size_t>(kHosts));
  for (int h = 0; h < kHosts; ++h) {
    std::set<std::string> ops;
    for (const auto& t : (*all)[h].traits)
      if (t.owner == fleet::TraitOwner::operator_) ops.insert(t.name);
    EXPECT_EQ(ops, expected[h]) << (*all)[h].name;
  }
}

}  // namespace

namespace {

// An in-process fleet service on a fresh SQLite file, token "tok", on a
// loopback port; `url` stays empty (and `problem` says why) if it cannot start.
struct TokenFleet {
  TempDir dir{"virtcap-fleet-cli"};
  std::unique_ptr<fleet::FleetService> service;
  std::string url, problem;
  TokenFleet() {
    fleet::ServiceOptions o;
    o.fleet.database_url = "sqlite://" + dir.sub("fleet.sqlite");
    o.http.listen = "127.0.0.1:0";
    o.auth.legacy_token = "tok";
    auto svc = fleet::FleetService::open(o);
    if (!svc.ok()) {
      problem = svc.error().message;
      return;
    }
    service = std::move(*svc);
    auto port = service->bind();
    if (!port.ok() || !service->start().ok()) {
      problem = "cannot bind or start the fleet service";
      return;
    }
    url = "http://127.0.0.1:" + std::to_string(*port);
  }
};

// `virtcap hosts` / `traits` against an in-process fleet service: exit codes
// follow the agent CLI's rule (0 ok, 1 failed, 2 usage or refused value or
// token, 3 unreachable).
TEST(FleetCli, ExitCodesFollowTheAgentCliRule) {
  TokenFleet fleet;
  ASSERT_FALSE(fleet.url.empty()) << fleet.problem;
  const std::string& url = fleet.url;
  http::Client c(url, "tok");
  const json r = report(1, {"COMPUTE_A"});
  ASSERT_TRUE(c.request("PUT", "/v1/hosts/h1", &r).ok());
  auto run = [&](std::vector<std::string> args, const std::string& server) {
    args.insert(args.end(), {"--token", "tok"});
    return cli(args, server);
  };
  EXPECT_EQ(run({"traits", "add", "h1", "CUSTOM_X"}, url).first, 0);
  EXPECT_EQ(run({"traits", "add", "h1", "CUSTOM_X"}, url).first, 0)
      << "adding a trait the host has changes nothing";
  EXPECT_EQ(run({"traits", "remove", "h1", "CUSTOM_X"}, url).first, 0);
  auto [rc, out] = run({"traits", "remove", "h1", "CUSTOM_X"}, url);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_EQ(run({"traits", "add", "nohost", "CUSTOM_X"}, url).first, 1);
  std::tie(rc, out) = run({"traits", "add", "h1", "NOT_CUSTOM"}, url);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("CUSTOM_"), std::string::npos) << out;
  EXPECT_EQ(run({"hosts", "--resources", "GPU:1"}, url).first, 2);
  EXPECT_EQ(run({"hosts", "--host", "h1"}, url).first, 2) << "--host needs --explain";
  EXPECT_EQ(cli({"hosts"}, url).first, 2) << "no token: 401";
  EXPECT_EQ(run({"hosts"}, "ftp://127.0.0.1:1").first, 2);
  std::tie(rc, out) = run({"hosts"}, "http://127.0.0.1:1");
  EXPECT_EQ(rc, 3) << out;
  EXPECT_NE(out.find("fleet service"), std::string::npos) << out;
  std::tie(rc, out) = run({"hosts", "--require", "COMPUTE_A", "-f", "value", "-c", "NAME"}, url);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, "h1\n");
  // The fleet's own variables, not the agent's; --token wins over its variable.
  ::setenv("VIRTCAP_FLEET", url.c_str(), 1);
  ::setenv("VIRTCAP_FLEET_TOKEN", "tok", 1);
  const auto from_env = proc::run({VIRTCAP_BINARY, "hosts", "-f", "value", "-c", "NAME"});
  const auto wrong_token = proc::run({VIRTCAP_BINARY, "hosts", "--token", "wrong"});
  ::unsetenv("VIRTCAP_FLEET");
  ::unsetenv("VIRTCAP_FLEET_TOKEN");
  ASSERT_TRUE(from_env.ok() && wrong_token.ok());
  EXPECT_EQ(from_env->exit_code, 0) << from_env->err;
  EXPECT_EQ(from_env->out, "h1\n");
  EXPECT_EQ(wrong_token->exit_code, 2) << wrong_token->err;
  EXPECT_EQ(run({"hosts", "delete", "h1"}, url).first, 0);
  EXPECT_EQ(run({"hosts", "delete", "h1"}, url).first, 1);
  EXPECT_EQ(fleet.service->fleet().index().host_count(), 0U);
}

}  // namespace

namespace {

// Both families of client commands report a failed call one way
// (src/cli/client_options.h call_reported): with --json the API's error
// object on stdout, always "virtcap: ..." on stderr naming what to do, and
// the same exit codes: 2 for a refused token, 3 for a server not reached.
TEST(FleetCli, BothClientFamiliesReportAFailedCallTheSameWay) {
  virtcap::testing::AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"tok\"\n");
  virtcap::testing::Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  TokenFleet fleet;
  ASSERT_FALSE(fleet.url.empty()) << fleet.problem;
  struct Family {
    std::string command, url, peer, token_env;
  };
  for (const Family& f : {Family{"list", agent.url(), "agent", "VIRTCAP_TOKEN"},
                          Family{"hosts", fleet.url, "fleet service", "VIRTCAP_FLEET_TOKEN"}}) {
    SCOPED_TRACE(f.command);
    const auto refused =
        proc::run({VIRTCAP_BINARY, f.command, "--server", f.url, "--token", "wrong", "--json"});
    ASSERT_TRUE(refused.ok());
    EXPECT_EQ(refused->exit_code, 2) << refused->err;
    const json body = json::parse(refused->out, nullptr, false);
    ASSERT_TRUE(body.is_object()) << refused->out;
    EXPECT_EQ(body["error"]["code"], "unauthorized") << refused->out;
    EXPECT_NE(refused->err.find("virtcap: "), std::string::npos) << refused->err;
    EXPECT_NE(refused->err.find("(give the " + f.peer + "'s token with --token or " + f.token_env + ")"),
              std::string::npos)
        << refused->err;
    const auto away = proc::run({VIRTCAP_BINARY, f.command, "--server", "http://127.0.0.1:1", "--json"});
    ASSERT_TRUE(away.ok());
    EXPECT_EQ(away->exit_code, 3) << away->err;
    const json gone = json::parse(away->out, nullptr, false);
    ASSERT_TRUE(gone.is_object()) << away->out;
    EXPECT_EQ(gone["error"]["code"], "unreachable") << away->out;
    EXPECT_NE(away->err.find(f.peer), std::string::npos) << away->err;
  }
}

// `virtcap fleet serve` start-up refusals are config errors (exit 2), made
// before the database is opened.
TEST(FleetCli, ServeRefusesANonLoopbackListenWithoutATokenAndBadConfig) {
  TempDir dir("virtcap-fleet-serve");
  const auto open_cfg = dir.write("open.toml", "[DEFAULT]\nstate_path = \"" + dir.str() +
                                                   "\"\n[fleet_service]\nlisten = \"0.0.0.0:0\"\n");
  auto out = proc::run({VIRTCAP_BINARY, "fleet", "serve", "--config", open_cfg}, 30s);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 2) << out->err;
  EXPECT_NE(out->err.find("[fleet_service]"), std::string::npos) << out->err;
  EXPECT_FALSE(fs::exists(dir.sub("fleet.sqlite"))) << "refused before opening the database";
  const auto bad = dir.write("bad.toml", "[fleet_service]\nhost_down_after = 0\n");
  out = proc::run({VIRTCAP_BINARY, "fleet", "serve", "--config", bad}, 30s);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 2) << out->err;
  EXPECT_NE(out->err.find("host_down_after"), std::string::npos) << out->err;
}

}  // namespace

namespace {

// `virtcap traits add` against a host that another writer changes between the
// CLI's read of the generation and its write (a real write through the same
// fleet, made while the server answers the CLI's GET or its 409): one 409 is
// retried with the generation it carries; two are reported as a failure.
TEST(FleetCli, TraitsAddRetriesOnceOnAStaleGenerationThenReports) {
  TempDir dir("virtcap-fleet-409");
  std::atomic<fleet::Fleet*> live{nullptr};
  std::atomic<int> bumps_left{0}, bumped{0};
  fleet::ServiceOptions o;
  o.fleet.database_url = "sqlite://" + dir.sub("fleet.sqlite");
  o.auth.anonymous = fleet::Role::operator_;  // a test bench: no credential needed
  o.http.listen = "127.0.0.1:0";
  // Runs in the connection's thread after the answer is queued and before it
  // is sent, so the CLI's next request always sees the bump.
  o.http.on_response = [&](const http::Request& req, const std::string& route, int status) {
    const bool read = req.method == "GET" && route == "/v1/hosts/{name}";
    if (!(read || status == 409) || bumps_left.load() == 0 || live.load() == nullptr) return;
    --bumps_left;
    auto h = live.load()->store().get_host("h1");
    ASSERT_TRUE(h.ok() && *h);
    const std::string t = "CUSTOM_OTHER" + std::to_string(bumped++);
    ASSERT_TRUE(live.load()->add_operator_trait("h1", t, (**h).generation).ok());
  };
  auto svc = fleet::FleetService::open(o);
  ASSERT_TRUE(svc.ok()) << svc.error().message;
  live = &(*svc)->fleet();
  auto port = (*svc)->bind();
  ASSERT_TRUE(port.ok() && (*svc)->start().ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(*port);
  auto r = fleet_report(1, {"COMPUTE_A"});
  r.name = "h1";
  ASSERT_TRUE((*svc)->fleet().report(r).ok());

  bumps_left = 1;  // changed after the CLI's read: one 409, retried
  auto [rc, out] = cli({"traits", "add", "h1", "CUSTOM_MINE"}, url);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(bumped.load(), 1);
  bumps_left = 2;  // changed again after the 409: reported, exit 1
  std::tie(rc, out) = cli({"traits", "add", "h1", "CUSTOM_LATE"}, url);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("generation"), std::string::npos) << out;
  EXPECT_NE(out.find("run it again"), std::string::npos) << out;
  auto h = (*svc)->fleet().store().get_host("h1");
  ASSERT_TRUE(h.ok() && *h);
  std::set<std::string> ops;
  for (const auto& t : (**h).traits)
    if (t.owner == fleet::TraitOwner::operator_) ops.insert(t.name);
  EXPECT_EQ(ops, (std::set<std::string>{"CUSTOM_MINE", "CUSTOM_OTHER0", "CUSTOM_OTHER1", "CUSTOM_OTHER2"}))
      << "every write that was acknowledged is there, the refused one is not";
}

}  // namespace
