// GET /metrics of the fleet service (Prometheus text format 0.0.4): the
// database's reachability and the index's freshness, size and progress,
// and the reports refused for their host's rate.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "fleet/fleet.h"

namespace virtcap::fleet {

inline double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

std::string metrics_text(const Fleet& fleet, std::uint64_t reports_refused);

}  // namespace virtcap::fleet
