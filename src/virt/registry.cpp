#include "virt/registry.h"

#include "common/strings.h"
#include "config/config.h"
#include "virt/fake/fake_driver.h"
#include "virt/libvirt/libvirt_driver.h"

namespace virtcap {

namespace {
using Factory = std::unique_ptr<ComputeDriver> (*)(const config::Config&);

struct Entry {
  DriverInfo info;
  Factory make;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> kEntries = {
      {{"libvirt", "Real guests through the libvirt C API ([libvirt] uri; default test:///default)",
        libvirt::kLibvirtStatic, libvirt::kDiscoveryDoc},
       [](const config::Config& cfg) -> std::unique_ptr<ComputeDriver> {
         return std::make_unique<libvirt::LibvirtDriver>(cfg);
       }},
      {{"fake", "In-memory driver, no image cache (for development and tests)", fake::kFake, ""},
       [](const config::Config&) -> std::unique_ptr<ComputeDriver> {
         return std::make_unique<fake::FakeDriver>("fake", fake::kFake);
       }},
      {{"fake_imagecache", "In-memory driver that declares has_imagecache (tests)", fake::kFakeImageCache,
        ""},
       [](const config::Config&) -> std::unique_ptr<ComputeDriver> {
         return std::make_unique<fake::FakeDriver>("fake_imagecache", fake::kFakeImageCache);
       }},
      {{"fake_minimal", "In-memory driver that declares nothing: all defaults (tests)", Capabilities{}, ""},
       [](const config::Config&) -> std::unique_ptr<ComputeDriver> {
         return std::make_unique<fake::FakeDriver>("fake_minimal", Capabilities{});
       }},
      {{"fake_failing", "In-memory driver whose init_host always fails (tests)", fake::kFake, ""},
       [](const config::Config&) -> std::unique_ptr<ComputeDriver> {
         return std::make_unique<fake::FakeDriver>("fake_failing", fake::kFake,
                                                   fake::Behaviour{.fail_init = true});
       }},
  };
  return kEntries;
}
}  // namespace

const std::vector<DriverInfo>& available_drivers() {
  static const std::vector<DriverInfo> kInfos = [] {
    std::vector<DriverInfo> out;
    for (const auto& e : entries()) out.push_back(e.info);
    return out;
  }();
  return kInfos;
}

std::string available_driver_names() { return join(available_drivers(), ", ", &DriverInfo::name); }

Result<std::unique_ptr<ComputeDriver>> make_driver(const std::string& name, const config::Config& cfg) {
  for (const auto& e : entries())
    if (e.info.name == name) return e.make(cfg);
  Error err = make_error(Errc::driver_load_failed,
                         "unknown driver '" + name + "'; available drivers: " + available_driver_names() +
                             " (set [compute] driver in the config, or pass --driver)");
  err.driver = name;
  return err;
}

}  // namespace virtcap
