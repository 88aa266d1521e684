// Loads a driver by name. The list is explicit (no static registration):
// src/virt/registry.cpp is the one place a driver is added.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "virtcap/capabilities.h"
#include "virtcap/driver.h"

namespace virtcap {

namespace config {
struct Config;
}

struct DriverInfo {
  std::string name;
  std::string summary;
  Capabilities declared;  // the compile-time declaration (before discovery)
  std::string discovery;  // how the driver discovers the rest, if it does
};

// Every driver this binary can load, in a stable order.
const std::vector<DriverInfo>& available_drivers();
std::string available_driver_names();  // "fake, fake_imagecache, ..."

// Constructs (but does not init_host) the named driver. An unknown name is
// Errc::driver_load_failed, naming it and listing the available drivers.
Result<std::unique_ptr<ComputeDriver>> make_driver(const std::string& name, const config::Config& cfg);

}  // namespace virtcap
