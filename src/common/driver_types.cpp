#include <unistd.h>

#include "virtcap/driver.h"

namespace virtcap {

bool valid_image_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return id.find("..") == std::string_view::npos && id != ".";
}

Result<HostResources> ComputeDriver::host_resources() {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (cpus <= 0 || pages <= 0 || page <= 0)
    return make_error(Errc::io_error, "cannot read this machine's online CPUs or physical memory (sysconf)");
  return HostResources{cpus, static_cast<std::int64_t>(pages) * page / (1024 * 1024)};
}

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
