// GET /metrics of the fleet service (Prometheus text format 0.0.4): the
// database's reachability and the index's freshness, size and progress.
#pragma once

#include <chrono>
#include <string>

#include "fleet/fleet.h"

namespace virtcap::fleet {

inline double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

std::string metrics_text(const Fleet& fleet);

}  // namespace virtcap::fleet
