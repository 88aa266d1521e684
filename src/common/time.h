// The one read of the wall clock ("now") for times that are stored, sent or
// compared with stored ones. Deadlines and durations use steady_clock instead.
#pragma once

#include <chrono>
#include <cstdint>

namespace virtcap {

std::chrono::system_clock::time_point wall_now();
// Unix time: seconds / milliseconds since 1970-01-01T00:00:00Z.
std::int64_t now_seconds();
std::int64_t now_ms();

}  // namespace virtcap
