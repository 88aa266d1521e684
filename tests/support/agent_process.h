// Runs the real `virtcap agent` binary on a free loopback port for
// integration tests, and hands out the real API client.
#pragma once

#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

#include "common/sha1.h"
#include "http/client.h"
#include "support/drained_child.h"
#include "support/test_support.h"

namespace virtcap::testing {

inline std::string sha1_hex_for_test(const std::string& s) { return sha1_hex(s); }

// A state directory with two sample images and a config for the agent.
struct AgentWorld {
  TempDir dir{"virtcap-agent"};
  std::string config;
  explicit AgentWorld(const std::string& extra_toml = "") {
    fs::create_directories(dir.sub("images"));
    make_raw_image(dir.sub("images/sample-a.raw"), "1M");
    make_raw_image(dir.sub("images/sample-b.raw"), "1M");
    write_config(extra_toml);
  }
  void write_config(const std::string& extra_toml) {
    config = dir.write(
        "virtcap.toml",
        "[DEFAULT]\nstate_path = \"" + dir.str() +
            "\"\nhost = \"test-host\"\nperiodic_fuzzy_delay = 0\n"
            "[libvirt]\nuri = \"test:///default\"\n" +
            extra_toml +
            (extra_toml.find("[api]") == std::string::npos ? "[api]\nlisten = \"127.0.0.1:0\"\n" : ""));
  }
};

// How long the agent may take to start listening, and to stop on SIGTERM
// (generous for ASan builds on a loaded machine; a healthy agent needs < 1 s).
inline constexpr std::chrono::seconds kAgentStartDeadline{30};
inline constexpr std::chrono::seconds kAgentStopDeadline{30};

class Agent {
 public:
  // Starts the agent and waits on its log until it listens, at most
  // kAgentStartDeadline; past it the agent is killed and running() is false,
  // with the reason at the end of exit_output().err.
  // `wrapper` runs it (e.g. strace ... for fault injection).
  explicit Agent(const std::string& config, std::vector<std::string> extra = {},
                 const std::vector<std::string>& wrapper = {})
      : Agent(Launch{with_wrapper(wrapper, agent_argv(config, std::move(extra)))}) {}
  // Another long-running virtcap service, e.g. `virtcap fleet serve`: ready
  // at the log line `ready`, its port after `listening` (then http:// or https://).
  struct Launch {
    std::vector<std::string> argv;
    std::string ready = "agent running";
    std::string listening = "API listening on ";
  };
  static Launch fleet_service(const std::string& config) {
    return {{VIRTCAP_BINARY, "fleet", "serve", "--config", config},
            "fleet service running",
            "fleet service listening on "};
  }
  explicit Agent(const Launch& launch) {
    const std::string& ready = launch.ready;
    child_.emplace(launch.argv);
    const auto seen = child_->wait_for(Stream::err, ready, Clock::now() + kAgentStartDeadline);
    if (seen == DrainedChild::Seen::closed) {  // it exited (or closed its log) before it was ready
      exited_ = child_->wait(kAgentStopDeadline);
      return;
    }
    if (seen == DrainedChild::Seen::deadline) {
      kill_and_say("the service did not log '" + ready + "' within " +
                   std::to_string(kAgentStartDeadline.count()) + " s; killed it");
      return;
    }
    const std::string log = child_->seen(Stream::err);
    const auto at = log.find(launch.listening) + launch.listening.size();
    const std::string scheme = log.compare(at, 8, "https://") == 0 ? "https" : "http";
    const auto colon = log.find(':', at + scheme.size() + 3);
    port_ = std::stoi(log.substr(colon + 1));
    url_ = scheme + "://127.0.0.1:" + std::to_string(port_);
  }
  static std::vector<std::string> with_wrapper(std::vector<std::string> wrapper,
                                               const std::vector<std::string>& argv) {
    wrapper.insert(wrapper.end(), argv.begin(), argv.end());
    return wrapper;
  }
  static std::vector<std::string> agent_argv(const std::string& config, std::vector<std::string> extra) {
    std::vector<std::string> argv = {VIRTCAP_BINARY, "agent", "--config", config};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  // A child of the test still running at the end is killed (with its
  // process group) and reaped by DrainedChild.
  bool running() const { return !exited_.has_value(); }
  // Waits for a log line containing `needle`, at most `limit`; past it (or
  // when the agent exits first) the agent is killed, false, and the end of
  // exit_output().err says why, after everything it logged.
  bool wait_for_log(const std::string& needle, std::chrono::seconds limit = kAgentStartDeadline) {
    if (!running()) return false;
    if (child_->wait_for(Stream::err, needle, Clock::now() + limit) == DrainedChild::Seen::yes) return true;
    kill_and_say("no log line with '" + needle + "' within " + std::to_string(limit.count()) +
                 " s; killed the agent");
    return false;
  }
  const proc::Output& exit_output() const { return *exited_; }
  const std::string& url() const { return url_; }
  int port() const { return port_; }
  pid_t pid() const { return child_->pid(); }
  // Everything the agent has logged so far.
  std::string log() const { return child_->seen(Stream::err); }
  http::Client client(const std::string& token = "") const { return http::Client(url_, token); }
  // A client with its own options (TLS: ca_file); the url is the agent's.
  http::Client client(http::ClientOptions o) const {
    o.url = url_;
    return http::Client(std::move(o));
  }
  bool send(int sig) { return child_->signal(sig); }
  // SIGTERM, then wait: the exit status and the whole log.
  // A stop that takes longer than kAgentStopDeadline is ended with SIGKILL
  // and reported at the end of the output's err (exit_code -1, term_signal 9).
  proc::Output stop(int sig = SIGTERM) {
    child_->signal(sig);
    exited_ = child_->wait(kAgentStopDeadline);
    if (exited_->timed_out)
      exited_->err += "\n[test support] the agent did not exit within " +
                      std::to_string(kAgentStopDeadline.count()) + " s of signal " + std::to_string(sig) +
                      "; killed it\n";
    return *exited_;
  }

 private:
  using Clock = DrainedChild::Clock;
  using Stream = DrainedChild::Stream;
  void kill_and_say(const std::string& why) {
    child_->signal(SIGKILL);
    exited_ = child_->wait(kAgentStopDeadline);
    exited_->err += "\n[test support] " + why + "\n";
  }

  std::optional<DrainedChild> child_;
  std::optional<proc::Output> exited_;
  int port_ = 0;
  std::string url_;
};

// Store, domains and disks agree: reconcile is consistent (no unknown
// domain, no orphan directory), no live record is mid-operation, every
// instance directory belongs to a live record, and every active record has
// its directory. Records of spawns the crash interrupted stay, in state
// error, without a disk; instances the restarted hypervisor no longer knows
// are lost, with their disk kept.
inline void expect_agreement(http::Client& c, const AgentWorld& w) {
  auto rec = c.request("GET", "/v1/reconcile");
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  EXPECT_TRUE(rec->at("consistent").get<bool>()) << rec->dump();
  auto list = c.request("GET", "/v1/instances");
  ASSERT_TRUE(list.ok());
  std::set<std::string> dirs;
  for (const auto& e : tree(w.dir.sub("instances")))
    if (e.size() == 36) dirs.insert(e);
  std::set<std::string> live;
  for (const auto& i : list->at("instances")) {
    const std::string uuid = i.at("uuid");
    live.insert(uuid);
    EXPECT_TRUE(i.at("task_state").is_null()) << i.dump();
    const std::string state = i.at("vm_state");
    // active: disk and domain; lost: the (in-process) hypervisor forgot the
    // domain at the crash, the disk is kept; error: an interrupted spawn,
    // rolled back, no disk.
    EXPECT_TRUE(state == "active" || state == "error" || state == "lost") << i.dump();
    EXPECT_EQ(dirs.count(uuid) == 1, state != "error") << i.dump();
    if (state == "active") {
      auto shown = c.request("GET", "/v1/instances/" + uuid);
      ASSERT_TRUE(shown.ok());
      EXPECT_EQ(shown->at("power_state"), "running") << "an active record has its domain";
    }
  }
  for (const auto& d : dirs) EXPECT_TRUE(live.count(d)) << "directory " << d << " has no live instance";
}

}  // namespace virtcap::testing
