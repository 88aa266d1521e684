// The contract between the compute manager (above) and a virtualization
// driver (below). Drivers never reach into the instance store: whatever they
// need from it, the manager gathers and hands down (manage_image_cache).
#pragma once

#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "virtcap/capabilities.h"
#include "virtcap/error.h"
#include "virtcap/instance.h"

namespace virtcap {

enum class PowerState { nostate, running, paused, shutdown, crashed, suspended };

struct InstanceSpec {
  std::string uuid;
  std::string name;
  std::string image_id;
  int memory_mb = 512;
  int vcpus = 1;
};

struct InterfaceSpec {
  std::string mac{};      // empty: the driver picks one
  std::string network{};  // e.g. a libvirt network name; empty: driver default
  std::string tag{};      // device tag; non-empty needs supports_tagged_attach_interface
};

struct InterfaceInfo {
  std::string mac;
  std::string network;
  std::string tag;
};

struct DriverInstance {
  std::string uuid;
  std::string name;
  PowerState power_state = PowerState::nostate;
  int memory_mb = 0;
  int vcpus = 0;
  std::vector<InterfaceInfo> interfaces;
};

// What a file in the base-image directory is, by its name: <sha1> an
// original, <sha1>_<bytes> a resized copy, <sha1>.tmp-* a download in
// progress; anything else unknown (never removed).
enum class BaseFileKind { original, resized, temporary, unknown };
// What the image-cache pass decided for it.
enum class BaseFileState { in_use, unused_young, removable, removed, kept, unknown };

constexpr std::string_view to_string(BaseFileKind k) {
  switch (k) {
    case BaseFileKind::original: return "original";
    case BaseFileKind::resized: return "resized";
    case BaseFileKind::temporary: return "temporary";
    case BaseFileKind::unknown: break;
  }
  return "unknown";
}

constexpr std::string_view to_string(BaseFileState s) {
  switch (s) {
    case BaseFileState::in_use: return "in_use";
    case BaseFileState::unused_young: return "unused_young";
    case BaseFileState::removable: return "removable";
    case BaseFileState::removed: return "removed";
    case BaseFileState::kept: return "kept";
    case BaseFileState::unknown: break;
  }
  return "unknown";
}

// One file in the base-image directory, as the image-cache pass saw it.
struct BaseFileReport {
  std::string name;  // file name in the base directory
  BaseFileKind kind = BaseFileKind::unknown;
  BaseFileState state = BaseFileState::unknown;
  std::string reason;  // why, in words
  std::uint64_t bytes = 0;
  std::int64_t age_seconds = 0;  // since its mtime, at scan time
  std::int64_t threshold_seconds = 0;
};

struct UnreadableDisk {
  std::string path;
  std::string error;
};

// A backing file that does not exist on this host and names no base file.
struct MissingBacking {
  std::string disk;     // the image that refers to it
  std::string backing;  // the path QEMU would open
};

// What one image-cache pass did (manage_image_cache's answer).
struct ImageCacheReport {
  bool complete = true;  // false: some disk could not be read, or a removal failed
  bool stopped = false;  // a stop request ended it between steps (then also not complete)
  bool dry_run = false;
  bool removal_enabled = true;
  std::string base_dir;
  std::size_t instances_considered = 0;  // live instances handed down by the manager
  std::size_t instance_dirs = 0;
  std::size_t disks_read = 0;
  std::vector<UnreadableDisk> unreadable_disks;
  std::vector<MissingBacking> missing_backings;
  // Bases kept because a backing path that does not exist here ends in
  // their name (another host's mount path for the same storage).
  std::size_t name_matches = 0;
  std::vector<BaseFileReport> files;
  std::size_t files_removed = 0;
  std::uint64_t bytes_freed = 0;
  double duration_seconds = 0;
  std::vector<std::string> notes;
};
std::string_view to_string(PowerState s);

// One file of a driver's image repository (`virtcap image list`).
struct RepoImage {
  std::string file;                // its name in the repository (any bytes)
  std::string id;                  // the image id it boots as; empty: not an <id>.raw / <id>.qcow2 name
  std::string format;              // told by magic (imagecache/image_probe.h); empty: unreadable
  std::uint64_t virtual_size = 0;  // 0: unknown
  std::uint64_t file_size = 0;
  bool base_cached = false;  // its base file is in the image cache
  std::string problem;       // why it cannot be booted; empty: it can
};
struct ImageListing {
  std::string repository;  // empty: the driver has no image repository
  std::vector<RepoImage> images;
};

// What the hypervisor says this host has (the fleet report's VCPU and
// MEMORY_MB totals, before [compute] reserved_* and allocation ratios).
struct HostResources {
  std::int64_t vcpus = 0;
  std::int64_t memory_mb = 0;
};

// An image id's shape: ^[A-Za-z0-9._-]{1,128}$ and no "..". Checked before
// any path is built or any record written.
bool valid_image_id(std::string_view id);

// Error codes. Every method may also fail with hypervisor_unavailable (the
// connection is gone; the driver is reconnecting, retry later) and
// driver_error (the hypervisor refused or failed the call for a reason with
// no better code). The codes a method returns besides those are listed with
// it; the manager relies on them (e.g. a spawn that fails with
// invalid_argument or not_found leaves no instance behind).
class ComputeDriver {
 public:
  virtual ~ComputeDriver() = default;

  // The registry name ("fake", "libvirt", ...).
  virtual std::string_view name() const = 0;

  // What this driver can do. Static declarations are known at construction;
  // discovered ones are filled in by init_host. The manager reads this once,
  // after init_host, and keeps its own copy. A driver that does not override
  // it agrees to the defaults.
  virtual const Capabilities& capabilities() const { return kDefaultCapabilities; }

  // Connect to the hypervisor and discover what depends on it.
  // Errors: hypervisor_unavailable (cannot connect), driver_error.
  virtual Status init_host(const std::string& host) = 0;

  // Non-empty while the hypervisor is unreachable (the driver is
  // reconnecting); periodic tasks skip with this reason.
  virtual std::string unavailable_reason() const { return {}; }

  // The host's CPUs and memory as the hypervisor sees them. The default (a
  // driver without a hypervisor to ask) is this machine's online CPUs and
  // physical memory.
  // Errors: io_error (the OS cannot tell), driver_error (the hypervisor
  // reports none), hypervisor_unavailable.
  virtual Result<HostResources> host_resources();

  // Errors: hypervisor_unavailable, driver_error.
  virtual Result<std::vector<DriverInstance>> list_instances() = 0;
  // Errors: not_found (no such domain, or not one of ours),
  // invalid_argument (not a uuid), hypervisor_unavailable, driver_error.
  virtual Result<DriverInstance> get_instance(const std::string& uuid) = 0;
  // Whether the driver could boot this image now (it exists and is usable);
  // the manager asks before it writes the instance record. The default
  // accepts any id of valid shape.
  // Errors: invalid_argument (bad id, or an image it cannot boot),
  // not_found (no such image), conflict (the id names two files), io_error.
  virtual Status check_image(const std::string& image_id) const {
    (void)image_id;
    return {};
  }
  // The images the driver could boot, by file, sorted by name. The default
  // (a driver without an image repository) lists none.
  // Errors: io_error (the repository cannot be read).
  virtual Result<ImageListing> list_images() const { return ImageListing{}; }
  // Creates and starts the instance; on failure, rolls back what it made.
  // Errors: invalid_argument (bad uuid or image), not_found (no such image),
  // already_exists (the uuid is taken on the hypervisor), io_error (disk or
  // instance directory), hypervisor_unavailable, driver_error.
  virtual Status spawn(const InstanceSpec& spec) = 0;
  // Destroying an instance the hypervisor does not know succeeds.
  // Errors: io_error (its directory cannot be removed),
  // hypervisor_unavailable, driver_error.
  virtual Status destroy(const std::string& uuid) = 0;
  // Errors: not_found, conflict (the guest is not running),
  // hypervisor_unavailable, driver_error.
  virtual Status reboot(const std::string& uuid) = 0;
  // Errors: not_found (no such instance), conflict (the MAC is taken, or
  // the guest's state refuses it), invalid_argument (the hypervisor refuses
  // the device), hypervisor_unavailable, driver_error.
  virtual Result<InterfaceInfo> attach_interface(const std::string& uuid, const InterfaceSpec& spec) = 0;
  // Errors: not_found (no such instance, or no interface with that MAC),
  // conflict, hypervisor_unavailable, driver_error.
  virtual Status detach_interface(const std::string& uuid, const std::string& mac) = 0;

  // Called by the image-cache pass, only when capabilities().has_imagecache.
  // `instances` are the live instances of every host sharing the instances
  // path. A dry run decides and reports but changes nothing. A stop request
  // on `stop` ends the pass between its steps, removing nothing more
  // (ImageCacheReport::stopped).
  // Errors: none beyond the common ones. A base directory, disk or lock that
  // cannot be used, or a removal that fails, is reported (complete = false,
  // with a note), not returned as an error.
  virtual Result<ImageCacheReport> manage_image_cache(const std::vector<InstanceRecord>& instances,
                                                      bool dry_run, std::stop_token stop) = 0;
};

}  // namespace virtcap
