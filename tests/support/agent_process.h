// Runs the real `virtcap agent` binary on a free loopback port for
// integration tests, and hands out the real API client.
#pragma once

#include <signal.h>

#include <optional>
#include <string>

#include "api/client.h"
#include "common/sha1.h"
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
    config = dir.write("virtcap.toml", "[DEFAULT]\nstate_path = \"" + dir.str() +
                                           "\"\nhost = \"test-host\"\nperiodic_fuzzy_delay = 0\n"
                                           "[libvirt]\nuri = \"test:///default\"\n" + extra_toml +
                                           (extra_toml.find("[api]") == std::string::npos
                                                ? "[api]\nlisten = \"127.0.0.1:0\"\n"
                                                : ""));
  }
};

class Agent {
 public:
  // Starts the agent and waits (on its log, not on time) until it listens.
  explicit Agent(const std::string& config, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {VIRTCAP_BINARY, "agent", "--config", config};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto c = proc::Child::spawn(argv);
    if (!c) throw std::runtime_error(c.error().message);
    child_.emplace(std::move(c.value()));
    if (!child_->wait_for_stderr("agent running")) {
      exited_ = child_->wait();
      return;
    }
    const std::string& log = child_->err_seen();
    const auto at = log.find("API listening on http://");
    const auto colon = log.find(':', at + 24);
    port_ = std::stoi(log.substr(colon + 1));
    url_ = "http://127.0.0.1:" + std::to_string(port_);
  }
  ~Agent() {
    if (child_ && !exited_) {
      child_->signal(SIGKILL);
      child_->wait();
    }
  }
  bool running() const { return !exited_.has_value(); }
  const proc::Output& exit_output() const { return *exited_; }
  const std::string& url() const { return url_; }
  int port() const { return port_; }
  pid_t pid() const { return child_->pid(); }
  const std::string& log() const { return child_->err_seen(); }
  api::Client client(const std::string& token = "") const { return api::Client(url_, token); }
  bool send(int sig) { return child_->signal(sig); }
  // Reads the agent's stderr until a line containing `needle` (true) or EOF.
  bool wait_for_log(const std::string& needle) { return child_->wait_for_stderr(needle); }
  // SIGTERM, then wait: the exit status and the whole log.
  proc::Output stop(int sig = SIGTERM) {
    child_->signal(sig);
    exited_ = child_->wait();
    return *exited_;
  }

 private:
  std::optional<proc::Child> child_;
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
inline void expect_agreement(api::Client& c, const AgentWorld& w) {
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
