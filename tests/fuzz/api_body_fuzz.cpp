// Fuzzes the API's request-body parsers: any bytes give a request or a clean
// invalid_argument error, never a crash; accepted values are in range.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "api/json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  using virtcap::Errc;
  auto boot = virtcap::api::parse_boot_request(body);
  if (boot.ok()) {
    // vcpus passes through: its range (the driver's max_vcpus) is the manager's.
    if (boot->memory_mb < 16) std::abort();
  } else if (boot.error().code != Errc::invalid_argument || boot.error().message.empty()) {
    std::abort();
  }
  auto nic = virtcap::api::parse_interface_request(body);
  if (!nic.ok() && nic.error().code != Errc::invalid_argument) std::abort();
  if (nic.ok() && !nic->mac.empty() && nic->mac.size() != 17) std::abort();
  auto pass = virtcap::api::parse_pass_request(body);
  if (!pass.ok() && pass.error().code != Errc::invalid_argument) std::abort();
  (void)virtcap::api::parse_empty_request(body);
  return 0;
}
