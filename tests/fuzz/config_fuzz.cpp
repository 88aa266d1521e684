// Fuzzes the config loader: any bytes must give a Config or a clean error,
// never a crash, and every error must name the source.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = virtcap::config::parse(text, "fuzz.toml");
  if (!r.ok() && r.error().message.find("fuzz.toml") == std::string::npos) std::abort();
  if (r.ok()) {
    // What we accept must survive our own rendering.
    auto again = virtcap::config::parse(virtcap::config::to_toml(r.value()), "again.toml");
    if (!again.ok()) std::abort();
  }
  return 0;
}
