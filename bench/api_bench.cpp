// API throughput against the framework's floor: GET /v1/capabilities and
// GET /v1/instances (1,000 instances; memory and SQLite stores; the page
// reused, and rendered after a write) on the real api::Server, against a
// minimal cpp-httplib handler returning a fixed body of similar size, on the
// same machine. One keep-alive client on loopback; time per request.
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <thread>

#include "api/server.h"
#include "compute/manager.h"
#include "ratio.h"
#include "store/memory/memory_store.h"
#include "store/sqlite/sqlite_store.h"
#include "support/store_seed.h"
#include "virt/fake/fake_driver.h"

namespace {

using namespace virtcap;

struct Agent {
  config::Config cfg;
  std::unique_ptr<InstanceStore> store;
  std::unique_ptr<compute::ComputeManager> mgr;
  std::unique_ptr<compute::PeriodicTaskRunner> runner;
  std::unique_ptr<api::Server> server;
  int port = 0;

  // The agent over a store of 1,000 instances: the in-memory one, or SQLite
  // (the default backend) in a temporary directory.
  explicit Agent(bool sqlite) {
    char tmpl[] = "/tmp/virtcap-apibench-XXXXXX";
    cfg.defaults.state_path = ::mkdtemp(tmpl);
    cfg.defaults.host = "bench";
    cfg.api.listen = "127.0.0.1:0";
    std::vector<InstanceRecord> rows;
    for (int i = 0; i < 1000; ++i) {
      InstanceRecord r;
      r.uuid = "00000000-0000-4000-8000-" + std::to_string(100000000000LL + i);
      r.name = "vm-" + std::to_string(i);
      r.host = "bench";
      r.image_id = "image-" + std::to_string(i % 50);
      r.vm_state = VmState::active;
      r.created_at = i;
      rows.push_back(r);
    }
    const std::string db = cfg.defaults.state_path + "/virtcap.db";
    if (sqlite) {
      testing::seed_store(db, rows);  // one transaction: a row per fsync would take minutes here
      store = std::move(store::SqliteStore::open(db).value());
    } else {
      store = std::make_unique<store::MemoryStore>();
      for (const auto& r : rows) (void)store->create_instance(r);
    }
    mgr = std::move(
        compute::ComputeManager::create(cfg, *store, std::make_unique<fake::FakeDriver>("fake", fake::kFake))
            .value());
    runner = std::make_unique<compute::PeriodicTaskRunner>(compute::PeriodicTaskRunner::Options{});
    server = std::make_unique<api::Server>(cfg, *mgr, *runner);
    port = server->bind().value();
    if (!server->start().ok()) std::abort();
  }
  ~Agent() {
    server->stop();
    std::filesystem::remove_all(cfg.defaults.state_path);
  }
};

Agent& agent() {
  static Agent a(false);
  return a;
}

Agent& sqlite_agent() {
  static Agent a(true);
  return a;
}

struct Floor {
  httplib::Server http;
  std::thread thread;
  int port = 0;
  std::string caps_body, list_body;
  Floor() {
    httplib::Client c("127.0.0.1", agent().port);
    caps_body = c.Get("/v1/capabilities")->body;
    list_body = c.Get("/v1/instances")->body;
    http.Get("/caps", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(caps_body, "application/json");
    });
    http.Get("/list", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(list_body, "application/json");
    });
    http.set_tcp_nodelay(true);  // as the agent does
    port = http.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { http.listen_after_bind(); });
    // Until it runs, stop() is a no-op and the destructor's join would wait
    // forever on a thread that went on to accept (seen with short runs).
    while (!http.is_running()) std::this_thread::yield();
  }
  ~Floor() {
    http.stop();
    thread.join();
  }
};

Floor& floor_server() {
  static Floor f;
  return f;
}

void get_loop(benchmark::State& state, int port, const char* path) {
  httplib::Client c("127.0.0.1", port);
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true);
  std::size_t bytes = 0;
  for (auto _ : state) {
    auto r = c.Get(path);
    if (!r || r->status != 200) {
      state.SkipWithError("request failed");
      break;
    }
    bytes += r->body.size();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["req/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_Floor_FixedCapabilitiesBody(benchmark::State& s) { get_loop(s, floor_server().port, "/caps"); }
void BM_Virtcap_GetCapabilities(benchmark::State& s) { get_loop(s, agent().port, "/v1/capabilities"); }
void BM_Floor_FixedInstancesBody(benchmark::State& s) { get_loop(s, floor_server().port, "/list"); }
void BM_Virtcap_GetInstances1000(benchmark::State& s) { get_loop(s, agent().port, "/v1/instances"); }
void BM_Virtcap_GetInstances1000Sqlite(benchmark::State& s) {
  get_loop(s, sqlite_agent().port, "/v1/instances");
}

// The same GET with a store write before each one (outside the timing): the
// kept page is stale every time, so each request renders its page from the
// store's cursor - the cost the reuse saves, and the cost after any change.
void get_after_write_loop(benchmark::State& state, Agent& a) {
  httplib::Client c("127.0.0.1", a.port);
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true);
  auto rec = a.store->get_instance("00000000-0000-4000-8000-100000000000");
  if (!rec.ok()) return state.SkipWithError("seed record missing");
  for (auto _ : state) {
    state.PauseTiming();
    ++rec->updated_at;
    const bool wrote = a.store->update_instance(*rec).ok();
    state.ResumeTiming();
    auto r = c.Get("/v1/instances");
    if (!wrote || !r || r->status != 200) {
      state.SkipWithError("write or request failed");
      break;
    }
  }
}
void BM_Virtcap_GetInstances1000AfterWrite(benchmark::State& s) { get_after_write_loop(s, agent()); }
void BM_Virtcap_GetInstances1000SqliteAfterWrite(benchmark::State& s) {
  get_after_write_loop(s, sqlite_agent());
}
BENCHMARK(BM_Floor_FixedCapabilitiesBody)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Virtcap_GetCapabilities)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Floor_FixedInstancesBody)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Virtcap_GetInstances1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Virtcap_GetInstances1000Sqlite)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Virtcap_GetInstances1000AfterWrite)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Virtcap_GetInstances1000SqliteAfterWrite)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  virtcap::api::tune_allocator();  // as `virtcap agent` does; applies to the floor server too
  agent();
  sqlite_agent();
  floor_server();
  return virtcap::bench::run_with_ratios(
      argc, argv,
      {{"BM_Floor_FixedCapabilitiesBody/real_time", "BM_Virtcap_GetCapabilities/real_time",
        "GET /v1/capabilities vs fixed-body floor (goal >= 0.5x)"},
       {"BM_Floor_FixedInstancesBody/real_time", "BM_Virtcap_GetInstances1000/real_time",
        "GET /v1/instances (1,000) vs fixed-body floor (goal >= 0.6x)"},
       {"BM_Floor_FixedInstancesBody/real_time", "BM_Virtcap_GetInstances1000Sqlite/real_time",
        "GET /v1/instances (1,000, SQLite store) vs floor (goal >= 0.6x)"},
       {"BM_Floor_FixedInstancesBody/real_time", "BM_Virtcap_GetInstances1000AfterWrite/real_time",
        "GET /v1/instances (1,000) after a write: page rendered, vs floor"},
       {"BM_Floor_FixedInstancesBody/real_time", "BM_Virtcap_GetInstances1000SqliteAfterWrite/real_time",
        "GET /v1/instances (1,000, SQLite) after a write: page rendered, vs floor"}});
}
