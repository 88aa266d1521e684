// Load and fault tests, bounded and on loopback only:
//  - 8 concurrent clients run 500 boot-and-delete cycles in all; every
//    request gets a well-formed answer; at the end the store, the domains
//    and the disks agree exactly. Requests/s, p50 and p99 are printed.
//  - kill -9 of the agent in the middle of that load, then a restart: the
//    agent converges (no record stuck mid-operation, no orphan domain or
//    disk), and every record acknowledged with 201 is in the store after the
//    restart; every delete acknowledged with 200 stays deleted.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "store/sqlite/sqlite_store.h"
#include "support/agent_process.h"

namespace virtcap::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct LoadResult {
  std::vector<double> latencies_ms;
  int malformed = 0, unexpected = 0, transport_errors = 0;
  double seconds = 0;
  std::set<std::string> created;  // uuids the agent acknowledged with 201
  std::set<std::string> deleted;  // uuids whose DELETE it acknowledged with 200
};

// Completed cycles, to wait on with a deadline (no spinning, no sleeping).
class Progress {
 public:
  void tick() {
    {
      std::lock_guard lock(mu_);
      ++done_;
    }
    cv_.notify_all();
  }
  // True once `n` cycles are done; false at the deadline.
  bool wait_for(int n, std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return done_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
};

// Runs `cycles` boot+delete cycles over `clients` threads against url. Stops
// early when `stop` turns true (the fault test kills the agent).
LoadResult run_load(const std::string& url, int clients, int cycles, std::atomic<bool>* stop = nullptr,
                    Progress* done = nullptr) {
  LoadResult total;
  std::mutex mu;
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      http::Client c(url);
      LoadResult mine;
      for (int i = next++; i < cycles && !(stop && stop->load()); i = next++) {
        auto timed = [&](const std::string& method, const std::string& path, const json* body) {
          const auto s = Clock::now();
          auto r = c.call(method, path, body);
          mine.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
          if (!r.ok())
            ++mine.transport_errors;
          else if (!r->body.is_object())
            ++mine.malformed;
          return r;
        };
        json body = {{"name", "load-" + std::to_string(t) + "-" + std::to_string(i)},
                     {"image", i % 2 ? "sample-a" : "sample-b"},
                     {"memory_mb", 64}};
        auto created = timed("POST", "/v1/instances", &body);
        if (!created.ok()) continue;
        if (created->status != 201) {
          ++mine.unexpected;
          continue;
        }
        const std::string uuid = created->body["uuid"];
        mine.created.insert(uuid);
        auto deleted = timed("DELETE", "/v1/instances/" + uuid, nullptr);
        if (deleted.ok() && deleted->status != 200) ++mine.unexpected;
        if (deleted.ok() && deleted->status == 200) mine.deleted.insert(uuid);
        if (done) done->tick();
      }
      std::lock_guard lock(mu);
      total.latencies_ms.insert(total.latencies_ms.end(), mine.latencies_ms.begin(), mine.latencies_ms.end());
      total.malformed += mine.malformed;
      total.unexpected += mine.unexpected;
      total.transport_errors += mine.transport_errors;
      total.created.insert(mine.created.begin(), mine.created.end());
      total.deleted.insert(mine.deleted.begin(), mine.deleted.end());
    });
  }
  for (auto& th : threads) th.join();
  total.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return total;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

TEST(Load, EightClientsFiveHundredBootDeleteCycles) {
  AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\nthreads = 8\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto r = run_load(agent.url(), 8, 500);
  EXPECT_EQ(r.transport_errors, 0);
  EXPECT_EQ(r.malformed, 0);
  EXPECT_EQ(r.unexpected, 0);
  EXPECT_EQ(r.created.size(), 500u);
  EXPECT_EQ(r.latencies_ms.size(), 1000u);
  std::printf("LOAD requests=%zu seconds=%.2f requests_per_second=%.1f p50_ms=%.2f p99_ms=%.2f\n",
              r.latencies_ms.size(), r.seconds, static_cast<double>(r.latencies_ms.size()) / r.seconds,
              percentile(r.latencies_ms, 0.50), percentile(r.latencies_ms, 0.99));
  auto c = agent.client();
  expect_agreement(c, w);
  EXPECT_TRUE(c.request("GET", "/v1/instances")->at("instances").empty());
  EXPECT_EQ(agent.stop().exit_code, 0);
}

TEST(Fault, KillNineDuringLoadThenRestartConverges) {
  AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\nthreads = 8\n");
  LoadResult r;
  bool reached = false;
  {
    Agent agent(w.config);
    ASSERT_TRUE(agent.running()) << agent.exit_output().err;
    std::atomic<bool> stop{false};
    Progress done;
    std::thread load([&] { r = run_load(agent.url(), 8, 500, &stop, &done); });
    // Kill once a good amount of work has happened, with requests in flight.
    reached = done.wait_for(60, std::chrono::seconds(60));
    ::kill(agent.pid(), SIGKILL);
    stop = true;
    load.join();
    agent.stop(SIGKILL);
  }
  ASSERT_TRUE(reached) << "the load did not complete 60 cycles within 60 s";
  ASSERT_FALSE(r.created.empty());
  ASSERT_FALSE(r.deleted.empty());
  Agent again(w.config);
  ASSERT_TRUE(again.running()) << again.exit_output().err;
  EXPECT_NE(again.log().find("reconcile at start"), std::string::npos);
  auto c = again.client();
  expect_agreement(c, w);
  // Over the API: an acknowledged delete stays deleted; any other
  // acknowledged instance is still live, unless its (unacknowledged) delete
  // was in flight at the kill.
  std::set<std::string> gone;
  for (const auto& uuid : r.created) {
    auto got = c.call("GET", "/v1/instances/" + uuid);
    ASSERT_TRUE(got.ok());
    if (r.deleted.count(uuid)) {
      EXPECT_EQ(got->status, 404) << uuid << " was deleted (200) before the kill: " << got->raw;
    } else {
      EXPECT_TRUE(got->status == 200 || got->status == 404) << uuid << ": " << got->raw;
    }
    if (got->status == 404) gone.insert(uuid);
  }
  // And it still works.
  json body = {{"name", "after-crash"}, {"image", "sample-a"}};
  auto created = c.call("POST", "/v1/instances", &body);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->status, 201) << created->raw;
  expect_agreement(c, w);
  EXPECT_EQ(again.stop().exit_code, 0);

  // No record lost: every instance acknowledged with 201 is in the store
  // file; one the API no longer shows is there as deleted, not missing.
  auto db = store::SqliteStore::open(w.dir.sub("virtcap.db"));
  ASSERT_TRUE(db.ok()) << db.error().describe();
  for (const auto& uuid : r.created) {
    auto rec = db.value()->get_instance(uuid);
    ASSERT_TRUE(rec.ok()) << "instance " << uuid
                          << " was acknowledged with 201 and is lost: " << rec.error().describe();
    if (gone.count(uuid)) {
      EXPECT_NE(rec->deleted_at, 0) << uuid;
      EXPECT_EQ(rec->vm_state, VmState::deleted) << uuid;
    }
  }
}

}  // namespace
}  // namespace virtcap::testing
