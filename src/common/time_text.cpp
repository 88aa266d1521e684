#include "common/time_text.h"

#include <ctime>

namespace virtcap {

std::string utc_text(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  struct tm tm {};
  char buf[32];
  // A time no calendar date can show (a year beyond int) is given as the
  // count itself, in date(1)'s "@seconds" form, never as half-done fields.
  if (::gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    return "@" + std::to_string(unix_seconds);
  return buf;
}

}  // namespace virtcap
