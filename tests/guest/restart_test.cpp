// Hypervisor restarts under load (issue 19, item 7): a real `virtcap agent`
// on qemu:///session serves a stream of requests that call the hypervisor
// while the session daemon is killed (SIGKILL or SIGTERM, at random points)
// VIRTCAP_HV_RESTARTS times (200 unless set). The agent must never die, every
// answer must be a 2xx or 503 hypervisor_unavailable (no reset, no 500, no
// silently wrong 200), it must recover within a bounded time after the last
// restart, and store, domains and disks must agree at the end.
// Runs as a non-root user (run-as-user.sh). The test runs the daemon, as
// systemd would: it starts a new one once the old one has exited, and the
// agent (LIBVIRT_AUTOSTART=0) only reconnects.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "support/agent_process.h"

namespace virtcap {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using testing::Agent;
using testing::AgentWorld;

// How long one step may take before the test calls it a failure: a new
// daemon up and the agent on it, a killed daemon gone, recovery at the end.
constexpr auto kStepDeadline = 60s;

// Polls `ok` every 20 ms until it holds or `limit` passes.
template <class F>
bool poll_until(std::chrono::milliseconds limit, F ok) {
  const auto deadline = Clock::now() + limit;
  while (!ok()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

bool is_unavailable(const Result<http::ClientResponse>& r) {
  return r.ok() && r->status == 503 && r->body.is_object() && r->body.contains("error") &&
         r->body["error"].value("code", "") == "hypervisor_unavailable";
}

// Every answer, by kind (2xx, 503 hypervisor_unavailable, wrong), in all and
// by route; the wrong ones in full (the first 20).
class Tally {
 public:
  using Counts = std::array<std::uint64_t, 3>;
  // Records an answer; `sound` says whether a 2xx says what it should.
  // Returns whether the answer was a 2xx.
  bool add(const std::string& what, const Result<http::ClientResponse>& r, bool sound = true) {
    const bool ok = r.ok() && r->status >= 200 && r->status < 300;
    const int kind = ok && sound ? 0 : is_unavailable(r) ? 1 : 2;
    std::lock_guard lock(mu_);
    ++all_[kind];
    ++by_route_[what][kind];
    if (kind == 2 && examples_.size() < 20)
      examples_.push_back(
          what + " -> " +
          (r.ok() ? std::to_string(r->status) + " " + r->raw : "transport error: " + r.error().message));
    return ok;
  }
  Counts all() const {
    std::lock_guard lock(mu_);
    return all_;
  }
  // "route 2xx/503/wrong" a line, then the wrong answers.
  std::string details() const {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& [what, n] : by_route_)
      s += "  " + what + " " + std::to_string(n[0]) + "/" + std::to_string(n[1]) + "/" +
           std::to_string(n[2]) + "\n";
    for (const auto& e : examples_) s += "  wrong: " + e + "\n";
    return s;
  }

 private:
  mutable std::mutex mu_;
  Counts all_{};
  std::map<std::string, Counts> by_route_;
  std::vector<std::string> examples_;
};

// Whether the session daemon's socket accepts a connection.
bool daemon_listening() {
  const char* rt = std::getenv("XDG_RUNTIME_DIR");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = std::string(rt ? rt : "") + "/libvirt/libvirt-sock";
  if (!rt || path.size() >= sizeof addr.sun_path) return false;
  path.copy(addr.sun_path, path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return fd.valid() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

// A session libvirtd in the foreground, a child of the test (it dies with
// the test), listening before it is handed out.
std::unique_ptr<testing::DrainedChild> start_daemon() {
  auto d = std::make_unique<testing::DrainedChild>(std::vector<std::string>{"libvirtd", "--timeout=120"});
  if (!poll_until(kStepDeadline, daemon_listening)) {
    ADD_FAILURE() << "libvirtd did not listen within " << kStepDeadline.count()
                  << " s: " << d->seen(testing::DrainedChild::Stream::err);
    return nullptr;
  }
  return d;
}

int restarts_wanted() {
  const char* n = std::getenv("VIRTCAP_HV_RESTARTS");
  return n && std::atoi(n) > 0 ? std::atoi(n) : 200;
}

TEST(HypervisorRestarts, TheAgentOutlivesEveryRestartAndAnswersEachRequestCleanly) {
  ASSERT_NE(::geteuid(), 0u)
      << "qemu:///session needs a non-root user; run through tests/guest/run-as-user.sh";
  const int restarts = restarts_wanted();
  ::setenv("LIBVIRT_AUTOSTART", "0", 1);  // the agent never starts a daemon: the test does
  auto daemon = start_daemon();
  ASSERT_TRUE(daemon);
  AgentWorld w("reconnect_max_backoff_seconds = 1\n");
  Agent a(w.config, {"--driver", "libvirt", "--uri", "qemu:///session"});
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  const pid_t agent_pid = a.pid();

  // A guest that runs throughout: every 200 for it must say it runs.
  auto c = a.client();
  const json boot = {{"name", "steady"}, {"image", "sample-a"}, {"memory_mb", 32}};
  auto steady = c.request("POST", "/v1/instances", &boot);
  ASSERT_TRUE(steady.ok()) << steady.error().message << "\n" << a.log();
  const std::string steady_uuid = steady->at("uuid");

  Tally tally;
  std::atomic<bool> stop{false};
  auto pause_if_unavailable = [](const Result<http::ClientResponse>& r) {
    if (is_unavailable(r)) std::this_thread::sleep_for(10ms);  // a client's retry pause
  };
  // Readers: the domain list (reconcile), one domain (show), the list
  // filtered by power state (the store, then the hypervisor).
  // Each 200 must say what is true: no domain unknown to the store, the
  // steady guest running, and in the list of running instances.
  const auto lists_steady = [&](const json& body) {
    for (const auto& i : body.value("instances", json::array()))
      if (i.value("uuid", "") == steady_uuid) return true;
    return false;
  };
  const std::vector<std::pair<std::string, std::function<bool(const json&)>>> reads = {
      {"/v1/reconcile", [](const json& b) { return b.value("unknown_domains", json::array()).empty(); }},
      {"/v1/instances/" + steady_uuid,
       [](const json& b) { return b.value("power_state", json()) == "running"; }},
      {"/v1/instances?power_state=running", lists_steady},
  };
  auto reader = [&] {
    auto rc = a.client();
    rc.set_timeout(60s);
    while (!stop)
      for (const auto& [path, says_true] : reads) {
        auto r = rc.call("GET", path);
        tally.add("GET " + (path.find(steady_uuid) != std::string::npos ? "/v1/instances/steady" : path), r,
                  !r.ok() || !r->body.is_object() || says_true(r->body));
        pause_if_unavailable(r);
      }
  };
  // A writer: boot a guest (define, start), delete it (destroy, undefine),
  // again. A delete answered 503 is retried until it goes; a boot that a
  // restart cut short keeps its record (state error, maybe with a domain),
  // which the writer deletes as a client would.
  std::atomic<int> cycles{0};
  auto cycler = [&] {
    auto cc = a.client();
    cc.set_timeout(60s);
    auto remove = [&](const std::string& uuid, const std::string& what) {
      const auto deadline = Clock::now() + kStepDeadline;
      for (;;) {
        auto del = cc.call("DELETE", "/v1/instances/" + uuid);
        if (tally.add(what, del) || !is_unavailable(del) || Clock::now() >= deadline) return;
        pause_if_unavailable(del);
      }
    };
    for (int n = 0; !stop; ++n) {
      const json body = {{"name", "cycle-" + std::to_string(n)}, {"image", "sample-b"}, {"memory_mb", 16}};
      auto booted = cc.call("POST", "/v1/instances", &body);
      if (tally.add("POST /v1/instances", booted)) {
        remove(booted->body.value("uuid", ""), "DELETE /v1/instances/cycle");
        ++cycles;
      }
      pause_if_unavailable(booted);
      auto failed = cc.call("GET", "/v1/instances?status=error");
      if (tally.add("GET /v1/instances?status=error", failed))
        for (const auto& i : failed->body.value("instances", json::array()))
          remove(i.value("uuid", ""), "DELETE /v1/instances/failed-boot");
    }
  };
  std::vector<std::thread> load;
  load.emplace_back(reader);
  load.emplace_back(reader);
  load.emplace_back(cycler);

  // The restarts. Each kill lands while the agent is connected, at a
  // random point of the requests in flight; the agent must see the daemon
  // die (healthz 503) before the next one starts, and be on it (healthz 200)
  // before it is killed in turn.
  std::mt19937 rng(static_cast<unsigned>(std::random_device{}()));
  std::uniform_int_distribution<int> jitter_ms(0, 400);
  const auto healthz = [&] {
    auto h = c.call("GET", "/healthz");
    return h.ok() ? h->status : 0;
  };
  int killed_by[2] = {0, 0};  // SIGKILL, SIGTERM
  const auto start = Clock::now();
  Clock::duration slowest{};
  for (int i = 0; i < restarts; ++i) {
    const auto step = Clock::now();
    ASSERT_TRUE(poll_until(kStepDeadline, [&] { return healthz() == 200; }))
        << "restart " << i << ": the agent did not reconnect within " << kStepDeadline.count() << " s\n"
        << a.log();
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter_ms(rng)));
    const bool term = rng() % 2 == 0;
    ++killed_by[term ? 1 : 0];
    ASSERT_TRUE(daemon->signal(term ? SIGTERM : SIGKILL));
    const auto out = daemon->wait(kStepDeadline);
    ASSERT_FALSE(out.timed_out) << "restart " << i << ": libvirtd outlived its signal by "
                                << kStepDeadline.count() << " s\n"
                                << out.err;
    ASSERT_TRUE(poll_until(kStepDeadline, [&] { return healthz() == 503; }))
        << "restart " << i << ": the agent never saw its daemon die\n"
        << a.log();
    ASSERT_EQ(::kill(agent_pid, 0), 0) << "the agent died at restart " << i << "\n" << a.log();
    daemon = start_daemon();
    ASSERT_TRUE(daemon) << "restart " << i;
    slowest = std::max(slowest, Clock::now() - step);
  }
  const auto killed_at = Clock::now();

  // Recovery: a call that needs the hypervisor succeeds again, within bounds.
  ASSERT_TRUE(poll_until(kStepDeadline, [&] {
    auto r = c.call("GET", "/v1/reconcile");
    return r.ok() && r->status == 200;
  })) << a.log();
  const auto recovered_at = Clock::now();
  stop = true;
  for (auto& t : load) t.join();

  using ms = std::chrono::milliseconds;
  const auto total_ms = std::chrono::duration_cast<ms>(recovered_at - start).count();
  const auto n = tally.all();
  std::ostringstream figures;
  figures << "restarts " << restarts << " (SIGKILL " << killed_by[0] << ", SIGTERM " << killed_by[1]
          << "); requests " << n[0] + n[1] + n[2] << ": 2xx " << n[0] << ", 503 hypervisor_unavailable "
          << n[1] << ", wrong " << n[2] << "; boot/delete cycles " << cycles << "; " << total_ms
          << " ms in all, " << total_ms / restarts << " ms a restart (slowest "
          << std::chrono::duration_cast<ms>(slowest).count() << " ms); recovered "
          << std::chrono::duration_cast<ms>(recovered_at - killed_at).count()
          << " ms after the last daemon listened";
  std::cout << "[ figures  ] " << figures.str() << "\n[ by route ] 2xx/503/wrong\n"
            << tally.details() << std::flush;
  RecordProperty("figures", figures.str());

  EXPECT_EQ(n[2], 0u) << tally.details();
  EXPECT_GT(n[0], 0u);
  EXPECT_GT(n[1], 0u) << "no request ever met a daemon that was down";
  ASSERT_TRUE(a.running());
  EXPECT_EQ(a.pid(), agent_pid);

  // The steady guest outlived every daemon; the cycles' leftovers (a boot
  // answered 503 keeps its record, state error) delete cleanly; then store,
  // domains and disks agree.
  auto shown = c.request("GET", "/v1/instances/" + steady_uuid);
  ASSERT_TRUE(shown.ok()) << shown.error().message;
  EXPECT_EQ(shown->at("power_state"), "running");
  for (std::string page = "/v1/instances"; !page.empty();) {
    auto list = c.request("GET", page);
    ASSERT_TRUE(list.ok()) << list.error().message;
    for (const auto& i : list->at("instances"))
      if (i.at("uuid") != steady_uuid) {
        auto del = c.request("DELETE", "/v1/instances/" + i.at("uuid").get<std::string>());
        EXPECT_TRUE(del.ok()) << i.dump() << ": " << del.error().message;
      }
    page = list->at("next").is_string() ? list->at("next").get<std::string>() : "";
  }
  testing::expect_agreement(c, w);
  EXPECT_TRUE(c.request("DELETE", "/v1/instances/" + steady_uuid).ok());
  const auto out = a.stop();
  EXPECT_EQ(out.exit_code, 0) << out.err;
  if (const char* keep = std::getenv("VIRTCAP_HV_AGENT_LOG")) std::ofstream(keep) << out.err;
}

}  // namespace
}  // namespace virtcap
