// The libvirt driver: real guests through the libvirt C API.
//
// Capabilities are partly static (what this driver always does: it keeps an
// image cache) and partly discovered at init_host from the connected
// hypervisor (see discover()). The test driver (test:///default) and QEMU
// (qemu:///session, qemu:///system) therefore report different values, each
// true to what that hypervisor really does.
#pragma once

#include <future>
#include <memory>
#include <mutex>

#include "config/config.h"
#include "imagecache/base_cache.h"
#include "virt/libvirt/connection.h"
#include "virt/libvirt/image_repo.h"
#include "virtcap/driver.h"

namespace virtcap::libvirt {

// What this driver declares whatever it is connected to.
inline constexpr Capabilities kLibvirtStatic{
    .has_imagecache = true,
    .image_formats = {ImageFormat::raw, ImageFormat::qcow2},
};

// How the discovered capabilities are found (also shown in docs/capabilities.md).
inline constexpr const char* kDiscoveryDoc =
    "Discovered at `init_host` from the connected hypervisor: `virt_type` from "
    "virConnectGetType (`TEST` → test; `QEMU` → kvm when "
    "virConnectGetDomainCapabilities answers for virt type kvm, else qemu); "
    "`max_vcpus` from the domain capabilities' `<vcpu max>` (QEMU) or "
    "virConnectGetMaxVcpus (others); `supports_attach_interface` is true on "
    "QEMU/KVM, where libvirt hot-plugs devices into a running guest, and false "
    "on the test driver, which implements no device attach; "
    "`supports_secure_boot` when the domain capabilities list a loader with "
    "`secure=yes`; `supports_vtpm` when they list a TPM with the `emulator` "
    "backend. The test driver has no domain capabilities, so those stay false.";

// The discovery itself, on an open connection. Exposed for tests.
Capabilities discover(virConnectPtr conn, Capabilities base);
// The part of discovery that reads domain-capabilities XML.
void apply_domain_capabilities(const std::string& xml, Capabilities& caps);

// [libvirt] overlay_writer: how spawn writes an instance's qcow2 overlay.
using config::OverlayWriter;

class LibvirtDriver : public ComputeDriver {
 public:
  explicit LibvirtDriver(const config::Config& cfg);
  ~LibvirtDriver() override;

  std::string_view name() const override { return "libvirt"; }
  const Capabilities& capabilities() const override { return caps_; }
  Status init_host(const std::string& host) override;
  std::string unavailable_reason() const override;
  Result<HostResources> host_resources() override;

  Result<std::vector<DriverInstance>> list_instances() override;
  Result<DriverInstance> get_instance(const std::string& uuid) override;
  Status check_image(const std::string& image_id) const override;
  Result<ImageListing> list_images() const override;
  Status spawn(const InstanceSpec& spec) override;
  Status destroy(const std::string& uuid) override;
  Status reboot(const std::string& uuid) override;
  Result<InterfaceInfo> attach_interface(const std::string& uuid, const InterfaceSpec& spec) override;
  Status detach_interface(const std::string& uuid, const std::string& mac) override;
  Result<ImageCacheReport> manage_image_cache(const std::vector<InstanceRecord>& instances, bool dry_run,
                                              std::stop_token stop) override;

  const std::string& uri() const { return conn_.uri(); }
  Connection& connection() { return conn_; }
  std::string instance_dir(const std::string& uuid) const;

 private:
  std::string domain_type() const;

  // Undoes a spawn that did not finish, however it ended (an error or an
  // exception): waits for the define thread, undefines what it defined, then
  // removes the instance directory - but keeps the directory when the domain
  // could not be undefined, as destroy() keeps a disk while its domain may
  // still exist. dismiss() once the instance is running.
  class SpawnRollback {
   public:
    SpawnRollback(LibvirtDriver& d, std::string uuid, std::string dir)
        : driver_(d), uuid_(std::move(uuid)), dir_(std::move(dir)) {}
    SpawnRollback(const SpawnRollback&) = delete;
    SpawnRollback& operator=(const SpawnRollback&) = delete;
    ~SpawnRollback();
    // The define's outcome (once); remembers whether a domain now exists.
    Status wait_define();
    void dismiss() { dismissed_ = true; }
    std::future<Status> defining;  // the define running beside the overlay, once launched

   private:
    LibvirtDriver& driver_;
    std::string uuid_, dir_;
    bool defined_ = false, dismissed_ = false;
  };

  config::Config cfg_;
  Capabilities caps_ = kLibvirtStatic;
  Connection conn_;
  ImageRepository images_;
  imagecache::BaseCache cache_;
  OverlayWriter overlay_writer_;
};

}  // namespace virtcap::libvirt
