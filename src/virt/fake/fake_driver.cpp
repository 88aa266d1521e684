#include "virt/fake/fake_driver.h"

#include <algorithm>
#include <cstdio>

namespace virtcap::fake {

FakeDriver::FakeDriver(std::string name, const Capabilities& caps, Behaviour behaviour)
    : name_(std::move(name)), caps_(caps), behaviour_(behaviour) {}

Status FakeDriver::init_host(const std::string&) {
  if (behaviour_.fail_init) {
    Error e = make_error(Errc::hypervisor_unavailable,
                         "the fake hypervisor of driver '" + name_ + "' refuses to start (test variant)");
    e.driver = name_;
    return e;
  }
  return {};
}

Result<std::vector<DriverInstance>> FakeDriver::list_instances() {
  ++calls_.list_instances;
  MutexLock lock(mu_);
  std::vector<DriverInstance> out;
  for (const auto& [uuid, inst] : instances_) out.push_back(inst);
  return out;
}

Result<DriverInstance> FakeDriver::get_instance(const std::string& uuid) {
  MutexLock lock(mu_);
  auto it = instances_.find(uuid);
  if (it == instances_.end())
    return make_error(Errc::not_found, "no instance " + uuid + " on the fake hypervisor");
  return it->second;
}

Status FakeDriver::spawn(const InstanceSpec& spec) {
  ++calls_.spawn;
  MutexLock lock(mu_);
  DriverInstance inst{spec.uuid, spec.name, PowerState::running, spec.memory_mb, spec.vcpus, {}};
  if (!instances_.emplace(spec.uuid, inst).second)
    return make_error(Errc::already_exists,
                      "instance " + spec.uuid + " already exists on the fake hypervisor");
  return {};
}

Status FakeDriver::destroy(const std::string& uuid) {
  ++calls_.destroy;
  MutexLock lock(mu_);
  instances_.erase(uuid);
  return {};
}

Status FakeDriver::reboot(const std::string& uuid) {
  ++calls_.reboot;
  MutexLock lock(mu_);
  auto it = instances_.find(uuid);
  if (it == instances_.end())
    return make_error(Errc::not_found, "no instance " + uuid + " on the fake hypervisor");
  it->second.power_state = PowerState::running;
  return {};
}

Result<InterfaceInfo> FakeDriver::attach_interface(const std::string& uuid, const InterfaceSpec& spec) {
  ++calls_.attach_interface;
  MutexLock lock(mu_);
  auto it = instances_.find(uuid);
  if (it == instances_.end())
    return make_error(Errc::not_found, "no instance " + uuid + " on the fake hypervisor");
  InterfaceInfo info{spec.mac, spec.network.empty() ? "default" : spec.network, spec.tag};
  if (info.mac.empty()) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "52:54:00:00:%02x:%02x", (next_mac_ >> 8) & 0xff, next_mac_ & 0xff);
    ++next_mac_;
    info.mac = buf;
  }
  auto& ifs = it->second.interfaces;
  if (std::any_of(ifs.begin(), ifs.end(), [&](const auto& i) { return i.mac == info.mac; }))
    return make_error(Errc::conflict, "instance " + uuid + " already has an interface with MAC " + info.mac);
  ifs.push_back(info);
  return info;
}

Status FakeDriver::detach_interface(const std::string& uuid, const std::string& mac) {
  ++calls_.detach_interface;
  MutexLock lock(mu_);
  auto it = instances_.find(uuid);
  if (it == instances_.end())
    return make_error(Errc::not_found, "no instance " + uuid + " on the fake hypervisor");
  auto& ifs = it->second.interfaces;
  auto pos = std::find_if(ifs.begin(), ifs.end(), [&](const auto& i) { return i.mac == mac; });
  if (pos == ifs.end())
    return make_error(Errc::not_found, "instance " + uuid + " has no interface with MAC " + mac);
  ifs.erase(pos);
  return {};
}

Result<ImageCacheReport> FakeDriver::manage_image_cache(const std::vector<InstanceRecord>& instances,
                                                        bool dry_run, std::stop_token) {
  ++calls_.manage_image_cache;
  last_image_cache_instances_ = instances.size();
  ImageCacheReport report;
  report.instances_considered = instances.size();
  report.dry_run = dry_run;
  report.notes.push_back("fake driver: no image cache to manage");
  return report;
}

}  // namespace virtcap::fake
