#include "virtcap/error.h"

namespace virtcap {

std::string_view to_string(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::conflict: return "conflict";
    case Errc::forbidden: return "forbidden";
    case Errc::capability_not_supported: return "capability_not_supported";
    case Errc::hypervisor_unavailable: return "hypervisor_unavailable";
    case Errc::driver_error: return "driver_error";
    case Errc::driver_load_failed: return "driver_load_failed";
    case Errc::store_error: return "store_error";
    case Errc::store_unavailable: return "store_unavailable";
    case Errc::io_error: return "io_error";
    case Errc::internal: return "internal";
  }
  return "internal";
}

std::string Error::describe() const {
  std::string out(to_string(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace virtcap
