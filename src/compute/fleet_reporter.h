// The agent's side of the fleet service: a periodic task of the manager
// ("fleet_report", listed by `virtcap tasks`) that sends PUT /v1/hosts/{name}
// at start and every [fleet] report_interval with this host's uuid, the
// traits its capabilities render, its inventory and its usage. A failed
// report is logged and retried with back-off inside the task's own thread;
// it never blocks or fails the agent. Empty [fleet] url: the task is
// disabled and nothing is sent (docs/fleet.md).
#pragma once

#include <chrono>
#include <stop_token>
#include <string>

#include "common/mutex.h"
#include "compute/periodic.h"
#include "fleet/model.h"

namespace virtcap::compute {

class ComputeManager;

inline constexpr std::string_view kFleetReportTask = "fleet_report";

class FleetReporter {
 public:
  explicit FleetReporter(ComputeManager& mgr) : mgr_(mgr) {}

  PeriodicTask task();
  // The agent API's address, once it is bound (sent as api_url).
  void set_api_url(std::string url);
  // What the next report says (uuid, traits, inventory, usage).
  Result<fleet::AgentReport> build();
  // One report, retried with back-off (1 s, doubling, at most half the
  // interval) until it succeeds, `stop` is requested or the interval passes.
  TaskOutcome run(std::stop_token stop);

 private:
  Result<std::string> host_uuid();
  ComputeManager& mgr_;
  Mutex mu_;
  std::string api_url_ GUARDED_BY(mu_), uuid_ GUARDED_BY(mu_);
  std::uint64_t failures_ GUARDED_BY(mu_) = 0;
};

}  // namespace virtcap::compute
