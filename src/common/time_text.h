// The one way virtcap prints a point in time for people: ISO 8601 in UTC.
#pragma once

#include <cstdint>
#include <string>

namespace virtcap {

// "2026-11-26T12:00:00Z". Before 1970 counts back ("1969-12-31T23:59:59Z"
// for -1). A value no calendar date can show (its year overflows int) is
// "@<seconds>", as date(1) takes it.
std::string utc_text(std::int64_t unix_seconds);

}  // namespace virtcap
