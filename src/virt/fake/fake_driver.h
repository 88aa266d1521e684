// The in-memory driver: no hypervisor, no disks. It keeps instances in a map,
// declares its capabilities at compile time, and counts the calls the manager
// makes so tests can prove what the manager did and did not do.
#pragma once

#include <atomic>
#include <map>

#include "common/mutex.h"
#include "virtcap/driver.h"

namespace virtcap::fake {

// The variants, each declared at compile time.
// `fake`: a capable hypervisor without an image cache.
inline constexpr Capabilities kFake{
    .supports_attach_interface = true,
    .supports_device_tagging = true,
    .supports_tagged_attach_interface = true,
    .image_formats = {ImageFormat::raw, ImageFormat::qcow2},
    .virt_type = VirtType::fake,
    .max_vcpus = 64,
};
// `fake_imagecache`: as `fake`, plus an image cache (the seed's libvirt case).
inline constexpr Capabilities kFakeImageCache = [] {
  Capabilities c = kFake;
  c.has_imagecache = true;
  return c;
}();
// `fake_minimal` declares nothing: every capability keeps its default.

struct Behaviour {
  bool fail_init = false;  // init_host fails, as a driver whose hypervisor is down
};

class FakeDriver : public ComputeDriver {
 public:
  FakeDriver(std::string name, const Capabilities& caps, Behaviour behaviour = {});

  std::string_view name() const override { return name_; }
  const Capabilities& capabilities() const override { return caps_; }
  Status init_host(const std::string& host) override;
  Result<std::vector<DriverInstance>> list_instances() override;
  Result<DriverInstance> get_instance(const std::string& uuid) override;
  Status spawn(const InstanceSpec& spec) override;
  Status destroy(const std::string& uuid) override;
  Status reboot(const std::string& uuid) override;
  Result<InterfaceInfo> attach_interface(const std::string& uuid, const InterfaceSpec& spec) override;
  Status detach_interface(const std::string& uuid, const std::string& mac) override;
  Result<ImageCacheReport> manage_image_cache(const std::vector<InstanceRecord>& instances, bool dry_run,
                                              std::stop_token stop) override;

  // Calls the manager made, per entry point.
  struct Calls {
    std::atomic<int> spawn{0}, destroy{0}, reboot{0}, attach_interface{0}, detach_interface{0},
        list_instances{0}, manage_image_cache{0};
  };
  const Calls& calls() const { return calls_; }
  std::size_t last_image_cache_instances() const { return last_image_cache_instances_; }

 private:
  std::string name_;
  Capabilities caps_;
  Behaviour behaviour_;
  Mutex mu_;
  std::map<std::string, DriverInstance> instances_ GUARDED_BY(mu_);
  int next_mac_ GUARDED_BY(mu_) = 1;
  Calls calls_;
  std::atomic<std::size_t> last_image_cache_instances_{0};
};

}  // namespace virtcap::fake
