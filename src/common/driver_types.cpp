#include "virtcap/driver.h"

namespace virtcap {

std::string_view to_string(PowerState s) {
  switch (s) {
    case PowerState::nostate: return "nostate";
    case PowerState::running: return "running";
    case PowerState::paused: return "paused";
    case PowerState::shutdown: return "shutdown";
    case PowerState::crashed: return "crashed";
    case PowerState::suspended: return "suspended";
  }
  return "nostate";
}

}  // namespace virtcap
