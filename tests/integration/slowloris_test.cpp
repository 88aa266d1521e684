// Issue 19 item 2 (no client can starve a server), with real processes: the
// agent and `virtcap fleet serve`, plain and TLS, with their default limits,
// under a slowloris attack (tests/support/slowloris.h), either 2,000
// connections spread over 127.0.0.0/24 or 500 from one address. Meanwhile a
// legitimate client on 127.0.1.1 sends GET /healthz on a new connection every
// 100 ms: at least 99% must be answered, p99 under 200 ms (the client's own
// clock). And no attacking connection is held much past the header deadline
// ([api]/[fleet_service] request_header_timeout, 10 s) although it keeps
// sending bytes. The attack lasts VIRTCAP_SLOWLORIS_SECONDS (default 25; the
// figures in docs/benchmarks.md are from 60).
#include "support/slowloris.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "support/agent_process.h"
#include "support/tls_pki.h"

using namespace virtcap;
using namespace virtcap::testing;

namespace {

enum class Service { agent, fleet };
enum class Attack { spread, single_address };

constexpr double kHeaderDeadlineS = 10;  // the default request_header_timeout
// The server's accept (deadline start) may come after the attacker's
// connect on a loaded machine, and its close a little after the deadline.
constexpr double kCloseSlackS = 5;
// The goal is p99 < 200 ms. An AddressSanitizer build (scripts/test's second
// ctest run) is slower in every step, so it checks the same within 1 s; the
// answered share and the deadline are checked as in any build.
#if defined(__SANITIZE_ADDRESS__)
constexpr double kP99LimitMs = 1000;
#else
constexpr double kP99LimitMs = 200;
#endif

int attack_seconds() {
  const char* v = std::getenv("VIRTCAP_SLOWLORIS_SECONDS");
  return v && std::atoi(v) > 0 ? std::atoi(v) : 25;
}

void run_case(Service service, bool tls, Attack attack) {
  const rlim_t files = raise_open_file_limit();
  if (files < 3000)
    GTEST_SKIP() << "the open-file limit (" << files << ") is below the 3,000 this test needs";
  const auto& pki = test_pki();
  TempDir dir("virtcap-slowloris");
  fs::create_directories(dir.sub("state"));
  const std::string tls_toml =
      tls ? "tls_cert = \"" + pki.server().cert + "\"\ntls_key = \"" + pki.server().key + "\"\n" : "";
  const std::string state = "[DEFAULT]\nstate_path = \"" + dir.sub("state") + "\"\n";
  std::unique_ptr<Agent> server;
  if (service == Service::agent)
    server =
        std::make_unique<Agent>(dir.write("agent.toml", state +
                                                            "host = \"slow-host\"\nperiodic_fuzzy_delay = 0\n"
                                                            "[compute]\ndriver = \"fake\"\n[api]\nlisten = "
                                                            "\"127.0.0.1:0\"\n" +
                                                            tls_toml));
  else
    server = std::make_unique<Agent>(Agent::fleet_service(dir.write(
        "fleet.toml",
        state + "[fleet_service]\nanonymous_role = \"reader\"\nlisten = \"127.0.0.1:0\"\n" + tls_toml)));
  ASSERT_TRUE(server->running()) << server->exit_output().err;
  const std::string ca = tls ? pki.ca() : "";
  constexpr std::uint32_t kClient = loopback(0, 1, 1);  // 127.0.1.1
  const auto first = probe(server->port(), kClient, "/healthz", ca, std::chrono::seconds(10));
  ASSERT_EQ(first.status, 200) << first.error;

  Slowloris::Options o;
  o.port = server->port();
  o.tls = tls;
  if (attack == Attack::spread) {
    for (unsigned c = 1; c <= 254; ++c) o.sources.push_back(loopback(0, 0, c));
    o.connections = 2000;
  } else {
    o.sources = {loopback(0, 0, 77)};
    o.connections = 500;
  }
  Slowloris slow(o);
  // The attack holds its connections before the client starts (not all of
  // a single-address flood: the server keeps 32 of them).
  const int held = attack == Attack::spread ? 1900 : 32;
  const bool holding = slow.wait_open(held, std::chrono::seconds(20));

  std::vector<double> answered_ms;
  std::vector<std::string> failures;
  const auto start = SteadyClock::now();
  const auto end = start + std::chrono::seconds(attack_seconds());
  int sent = 0;
  // The client's pace: 10 requests a second, or the next as soon as a slow
  // one (5 s at most) has ended.
  for (auto next = start; SteadyClock::now() < end;
       next = std::max(next + std::chrono::milliseconds(100), SteadyClock::now())) {
    std::this_thread::sleep_until(next);
    ++sent;
    const auto r = probe(server->port(), kClient, "/healthz", ca, std::chrono::seconds(5));
    if (r.status == 200)
      answered_ms.push_back(r.ms);
    else if (failures.size() < 5)
      failures.push_back(std::to_string(r.status) + " after " + std::to_string(static_cast<int>(r.ms)) +
                         " ms: " + r.error);
  }
  const auto f = slow.stop();
  // Percentiles over every request sent, an unanswered one counting as
  // slower than any answer.
  std::vector<double> all_ms = answered_ms;
  all_ms.resize(static_cast<std::size_t>(sent), std::numeric_limits<double>::infinity());
  std::sort(all_ms.begin(), all_ms.end());
  std::sort(answered_ms.begin(), answered_ms.end());
  auto pct = [&](double q) {
    return all_ms.empty() ? 0.0 : all_ms[static_cast<std::size_t>(std::ceil(q * all_ms.size())) - 1];
  };
  const double answered = sent ? 100.0 * static_cast<double>(answered_ms.size()) / sent : 0;
  const double p99 = pct(0.99);
  std::printf(
      "slowloris %s %s %s, %d s: %zu/%d answered (%.1f%%), p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
      "attack: %d connections opened, peak %d open, %d closed by the server, longest held %.1f s\n",
      service == Service::agent ? "agent" : "fleet-service", tls ? "TLS" : "plain",
      attack == Attack::spread ? "2000 connections over 127.0.0.0/24" : "500 connections from 127.0.0.77",
      attack_seconds(), answered_ms.size(), sent, answered, pct(0.5), pct(0.99),
      answered_ms.empty() ? 0.0 : answered_ms.back(), f.opened, f.peak_open, f.closed_by_server,
      f.longest_held_s);
  std::fflush(stdout);
  std::string why;
  for (const auto& s : failures) why += "\n  " + s;
  EXPECT_TRUE(holding) << "the attack never held " << held << " connections at once (peak " << f.peak_open
                       << ")";
  EXPECT_GE(answered, 99.0) << "first failures:" << why;
  EXPECT_LT(p99, kP99LimitMs);
  EXPECT_LE(f.longest_held_s, kHeaderDeadlineS + kCloseSlackS)
      << "an attacking connection was held past the header deadline while it sent a byte every 1-2 s";
  EXPECT_TRUE(server->running());
}

TEST(Load, SlowlorisFrom2000ConnectionsOverA24LeavesTheAgentAnswering) {
  run_case(Service::agent, false, Attack::spread);
}

TEST(Load, SlowlorisOverTlsFrom2000ConnectionsLeavesTheFleetServiceAnswering) {
  run_case(Service::fleet, true, Attack::spread);
}

TEST(Load, SingleAddressTlsSlowlorisLeavesTheAgentAnswering) {
  run_case(Service::agent, true, Attack::single_address);
}

TEST(Load, SingleAddressSlowlorisLeavesTheFleetServiceAnswering) {
  run_case(Service::fleet, false, Attack::single_address);
}

}  // namespace
