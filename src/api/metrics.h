// GET /metrics of the agent API: the counters the server keeps, and the
// agent's own state at scrape time, in Prometheus text format 0.0.4.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/mutex.h"
#include "compute/manager.h"
#include "compute/periodic.h"

namespace virtcap::api {

// Prometheus-style counters kept by the API server.
class Metrics {
 public:
  void request(const std::string& method, const std::string& route, int status);
  // What the agent's own state says at scrape time.
  struct Snapshot {
    std::vector<compute::TaskStatus> tasks;
    compute::ComputeManager::ImageCacheTotals image_cache;
    bool hypervisor_connected = false;
    std::string driver;
    std::map<std::string, std::uint64_t> instances_by_vm_state;
  };
  std::string render(const Snapshot& s) const;

 private:
  mutable Mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_ GUARDED_BY(mu_);
};

}  // namespace virtcap::api
