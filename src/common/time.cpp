#include "common/time.h"

namespace virtcap {

std::chrono::system_clock::time_point wall_now() { return std::chrono::system_clock::now(); }

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(wall_now().time_since_epoch()).count();
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall_now().time_since_epoch()).count();
}

}  // namespace virtcap
