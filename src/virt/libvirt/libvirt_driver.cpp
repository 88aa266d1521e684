#include "virt/libvirt/libvirt_driver.h"

#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <pugixml.hpp>
#include <sstream>

#include "common/group.h"
#include "common/subprocess.h"
#include "common/uuid.h"
#include "imagecache/pass.h"
#include "imagecache/qcow2_writer.h"
#include "virt/libvirt/domain_xml.h"

namespace virtcap::libvirt {

namespace fs = std::filesystem;

namespace {

// RAII for libvirt objects and strings.
struct DomainDeleter {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using Domain = std::unique_ptr<virDomain, DomainDeleter>;
struct CharDeleter {
  void operator()(char* p) const { std::free(p); }
};
using CStr = std::unique_ptr<char, CharDeleter>;

// Translates libvirt's last error after a failed call on an instance.
Error call_error(const std::string& what, const std::string& uuid) {
  Error e = last_error(what + " for instance " + uuid);
  switch (e.backend_code) {
    case VIR_ERR_NO_DOMAIN: e.code = Errc::not_found; break;
    case VIR_ERR_OPERATION_INVALID: e.code = Errc::conflict; break;
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_XML_ERROR: e.code = Errc::invalid_argument; break;
    default: break;
  }
  return e;
}

Result<Domain> lookup(virConnectPtr conn, const std::string& uuid) {
  if (!is_uuid(uuid)) return make_error(Errc::invalid_argument, "'" + uuid + "' is not an instance uuid");
  virDomainPtr d = virDomainLookupByUUIDString(conn, uuid.c_str());
  if (!d) return call_error("lookup", uuid);
  return Domain(d);
}

// A virDomainIs* answer (1 or 0), or the error of its -1: a connection lost
// mid-call reads as a failure, never as "no" (a destroy that took -1 for "not
// running, not persistent" used to remove the disk of a domain it had left
// defined). A domain gone in between is not_found.
enum class DomainIs { no, yes };
Result<DomainIs> domain_is(int answer, const std::string& what, const std::string& uuid) {
  if (answer < 0) return call_error(what, uuid);
  return answer == 1 ? DomainIs::yes : DomainIs::no;
}

// The state, or an error (not a silent nostate: a lost connection is not a
// domain without a state).
Result<PowerState> power_state(virDomainPtr d) {
  int state = 0, reason = 0;
  if (virDomainGetState(d, &state, &reason, 0) < 0) return last_error("cannot read a domain's state");
  switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED: return PowerState::running;
    case VIR_DOMAIN_PAUSED: return PowerState::paused;
    case VIR_DOMAIN_SHUTDOWN:
    case VIR_DOMAIN_SHUTOFF: return PowerState::shutdown;
    case VIR_DOMAIN_CRASHED: return PowerState::crashed;
    case VIR_DOMAIN_PMSUSPENDED: return PowerState::suspended;
    default: return PowerState::nostate;
  }
}

// A hot-plug affects the running domain, and its definition when it has one.
Result<unsigned> affect_flags(virDomainPtr d, const std::string& uuid) {
  auto persistent = domain_is(virDomainIsPersistent(d), "read persistence", uuid);
  if (!persistent.ok()) return persistent.error();
  unsigned flags = VIR_DOMAIN_AFFECT_LIVE;
  if (*persistent == DomainIs::yes) flags |= VIR_DOMAIN_AFFECT_CONFIG;
  return flags;
}

// Our domains only (they carry virtcap metadata); nullopt for others.
Result<std::optional<DriverInstance>> describe(virDomainPtr d) {
  CStr xml(virDomainGetXMLDesc(d, 0));
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (!xml || virDomainGetUUIDString(d, uuid) < 0) return last_error("cannot read a domain's definition");
  auto facts = parse_domain_xml(xml.get());
  if (!facts.ok()) return facts.error();
  if (!facts->ours) return std::optional<DriverInstance>{};
  DriverInstance inst;
  inst.uuid = uuid;
  inst.name = facts->name;
  auto state = power_state(d);
  if (!state.ok()) return state.error();
  inst.power_state = state.value();
  inst.memory_mb = facts->memory_mb;
  inst.vcpus = facts->vcpus;
  inst.interfaces = facts->interfaces;
  return std::optional<DriverInstance>(std::move(inst));
}

// The instance's disk: an empty qcow2 overlay on the cached base, written
// under a temporary name (so an image-cache pass never reads a half-written
// header), fsynced and renamed into place, by either writer ([libvirt]
// overlay_writer). The directory is not fsynced: the instance directory
// itself (mkdir above) is not either, so that would not make the disk's name
// durable; what the fsync guarantees is that `disk` never names a partly
// written image.
constexpr auto kOverlayDurability = imagecache::Durability::file;

Status create_overlay_disk(OverlayWriter writer, const std::string& base_path, ImageFormat format,
                           const std::string& disk, const imagecache::DiskAccess& access) {
  const std::string fmt(to_string(format));
  if (writer == OverlayWriter::native) {
    auto spec = imagecache::overlay_spec_for_base(base_path, fmt);
    if (!spec.ok()) return spec.error();
    return imagecache::create_overlay(disk, *spec, kOverlayDurability, access);
  }
  const std::string partial = disk + std::string(imagecache::kTempMarker) + "create";
  auto r = proc::run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", base_path, partial});
  if (!r.ok()) return r.error();
  if (r->exit_code != 0) {
    ::unlink(partial.c_str());
    return make_error(Errc::io_error, "qemu-img create of " + disk + " failed: " + r->err);
  }
  if (Status st = imagecache::fsync_file(partial, access); !st.ok()) {
    ::unlink(partial.c_str());
    return st;
  }
  return imagecache::rename_into_place(partial, disk, kOverlayDurability);
}

}  // namespace

void apply_domain_capabilities(const std::string& xml, Capabilities& caps) {
  pugi::xml_document doc;
  if (!doc.load_string(xml.c_str())) return;
  auto root = doc.child("domainCapabilities");
  if (int max = root.child("vcpu").attribute("max").as_int(0); max > 0) caps.max_vcpus = max;
  for (auto e : root.child("os").child("loader").children("enum"))
    if (std::string(e.attribute("name").as_string()) == "secure")
      for (auto v : e.children("value"))
        if (std::string(v.text().as_string()) == "yes") caps.supports_secure_boot = true;
  auto tpm = root.child("devices").child("tpm");
  if (std::string(tpm.attribute("supported").as_string()) == "yes")
    for (auto e : tpm.children("enum"))
      if (std::string(e.attribute("name").as_string()) == "backendModel")
        for (auto v : e.children("value"))
          if (std::string(v.text().as_string()) == "emulator") caps.supports_vtpm = true;
}

Capabilities discover(virConnectPtr conn, Capabilities caps) {
  const char* type = virConnectGetType(conn);  // "TEST", "QEMU", "LXC", "Xen", ...
  std::string t = type ? type : "";
  for (auto& ch : t) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (t == "QEMU") {
    caps.supports_attach_interface = true;
    char* xml = virConnectGetDomainCapabilities(conn, nullptr, nullptr, nullptr, "kvm", 0);
    caps.virt_type = VirtType::kvm;
    if (!xml) {
      virResetLastError();
      xml = virConnectGetDomainCapabilities(conn, nullptr, nullptr, nullptr, "qemu", 0);
      caps.virt_type = VirtType::qemu;
    }
    if (xml) {
      apply_domain_capabilities(xml, caps);
      std::free(xml);
    } else {
      virResetLastError();
    }
  } else {
    caps.virt_type = t == "TEST"  ? VirtType::test
                     : t == "LXC" ? VirtType::lxc
                     : t == "XEN" ? VirtType::xen
                                  : VirtType::unknown;
  }
  if (caps.max_vcpus == 0) {
    const int n = virConnectGetMaxVcpus(conn, nullptr);
    if (n > 0)
      caps.max_vcpus = n;
    else
      virResetLastError();
  }
  return caps;
}

LibvirtDriver::LibvirtDriver(const config::Config& cfg)
    : cfg_(cfg),
      conn_(cfg.libvirt.uri, cfg.libvirt.reconnect_max_backoff_seconds),
      images_(cfg.images_path()),
      cache_(cfg.instances_path(), cfg.image_cache.subdirectory_name),
      overlay_writer_(cfg.libvirt.overlay_writer) {
  cache_.lock_timeout_seconds = cfg.image_cache.lock_timeout;
  if (!cfg.libvirt.disk_group.empty())
    cache_.access.group = group_id(cfg.libvirt.disk_group);  // checked at load
}

LibvirtDriver::~LibvirtDriver() = default;

std::string LibvirtDriver::instance_dir(const std::string& uuid) const {
  return cfg_.instances_path() + "/" + uuid;
}

std::string LibvirtDriver::domain_type() const {
  switch (caps_.virt_type) {
    case VirtType::test: return "test";
    case VirtType::kvm: return "kvm";
    default: return "qemu";
  }
}

Status LibvirtDriver::init_host(const std::string&) {
  if (Status st = conn_.open(); !st.ok()) return st;
  auto caps =
      conn_.with([&](virConnectPtr c) -> Result<Capabilities> { return discover(c, kLibvirtStatic); });
  if (!caps.ok()) return caps.error();
  caps_ = caps.value();
  // instances_path is created by the first spawn (with the lock directory),
  // not here: inspecting a driver (`virtcap capabilities`) writes nothing.
  spdlog::info("libvirt: connected to '{}' (virt_type={}, max_vcpus={}, attach_interface={})", conn_.uri(),
               to_string(caps_.virt_type), caps_.max_vcpus, caps_.supports_attach_interface);
  return {};
}

std::string LibvirtDriver::unavailable_reason() const {
  if (conn_.connected()) return {};
  return "hypervisor at '" + conn_.uri() + "' is unavailable: " + conn_.unavailable_reason();
}

// virNodeGetInfo: CPUs and memory (KiB) of the node libvirt manages.
Result<HostResources> LibvirtDriver::host_resources() {
  return conn_.with([&](virConnectPtr c) -> Result<HostResources> {
    virNodeInfo info{};
    if (virNodeGetInfo(c, &info) != 0)
      return last_error("cannot read the host's CPUs and memory (virNodeGetInfo)");
    if (info.cpus == 0 || info.memory == 0)
      return make_error(Errc::driver_error, "hypervisor at '" + conn_.uri() + "' reports " +
                                                std::to_string(info.cpus) + " CPUs and " +
                                                std::to_string(info.memory) + " KiB of memory");
    return HostResources{static_cast<std::int64_t>(info.cpus), static_cast<std::int64_t>(info.memory / 1024)};
  });
}

Result<std::vector<DriverInstance>> LibvirtDriver::list_instances() {
  return conn_.with([&](virConnectPtr c) -> Result<std::vector<DriverInstance>> {
    virDomainPtr* doms = nullptr;
    const int n = virConnectListAllDomains(c, &doms, 0);
    if (n < 0) return last_error("cannot list domains");
    std::vector<DriverInstance> out;
    std::optional<Error> failure;
    for (int i = 0; i < n; ++i) {
      Domain d(doms[i]);
      if (failure) continue;
      auto inst = describe(d.get());
      if (!inst.ok()) {
        // A domain that vanished between list and describe is simply gone.
        if (inst.error().backend_code != VIR_ERR_NO_DOMAIN) failure = inst.error();
        continue;
      }
      if (inst->has_value()) out.push_back(std::move(**inst));
    }
    std::free(doms);
    if (failure) return *failure;
    return out;
  });
}

Result<DriverInstance> LibvirtDriver::get_instance(const std::string& uuid) {
  return conn_.with([&](virConnectPtr c) -> Result<DriverInstance> {
    auto d = lookup(c, uuid);
    if (!d.ok()) return d.error();
    auto inst = describe(d->get());
    if (!inst.ok()) return inst.error();
    if (!inst->has_value())
      return make_error(Errc::not_found, "domain " + uuid + " is not managed by virtcap");
    return std::move(**inst);
  });
}

Status LibvirtDriver::check_image(const std::string& image_id) const {
  auto image = images_.find(image_id);
  if (!image.ok()) return image.error();
  return {};
}

Result<ImageListing> LibvirtDriver::list_images() const {
  auto images = images_.list();
  if (!images.ok()) return images.error();
  ImageListing out{images_.dir(), std::move(images.value())};
  for (auto& img : out.images) {
    struct stat st {};
    img.base_cached = !img.id.empty() && valid_image_id(img.id) &&
                      ::stat(cache_.base_path(img.id).c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }
  return out;
}

namespace {

// `fn` on a thread of its own; in line, at get(), if no thread can be had.
std::future<Status> launch(const std::function<Status()>& fn) {
  try {
    return std::async(std::launch::async, fn);
  } catch (const std::system_error&) {
    return std::async(std::launch::deferred, fn);
  }
}

}  // namespace

LibvirtDriver::SpawnRollback::~SpawnRollback() {
  if (dismissed_) return;
  try {
    if (defining.valid()) (void)wait_define();
    if (defined_) {
      Status undone = driver_.conn_.with([&](virConnectPtr c) -> Status {
        auto d = lookup(c, uuid_);
        if (!d.ok()) return d.error().code == Errc::not_found ? Status{} : Status{d.error()};
        return virDomainUndefine(d->get()) < 0 ? Status{call_error("undefine", uuid_)} : Status{};
      });
      if (!undone.ok()) {  // keep the disk while the domain may still exist, as destroy() does
        spdlog::error(
            "libvirt: spawn of {} failed and its domain could not be undefined ({}); kept it and {}", uuid_,
            undone.error().message, dir_);
        return;
      }
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec)
      spdlog::error("libvirt: spawn of {} failed and {} could not be removed: {}", uuid_, dir_, ec.message());
  } catch (const std::exception& e) {
    spdlog::error("libvirt: rolling back the spawn of {} failed: {}", uuid_, e.what());
  }
}

Status LibvirtDriver::SpawnRollback::wait_define() {
  Status st = defining.get();
  defined_ = st.ok();
  return st;
}

Status LibvirtDriver::spawn(const InstanceSpec& spec) {
  if (!is_uuid(spec.uuid)) return make_error(Errc::invalid_argument, "'" + spec.uuid + "' is not a uuid");
  if (!conn_.connected()) return make_error(Errc::hypervisor_unavailable, unavailable_reason());
  auto image = images_.find(spec.image_id);
  if (!image.ok()) return image.error();

  // The instance directory claims the uuid on disk before anything is
  // defined; the define itself refuses a uuid the hypervisor already knows.
  const std::string dir = instance_dir(spec.uuid);
  const std::string disk = dir + "/disk";
  if (Status s = imagecache::make_dirs(cfg_.instances_path(), cache_.access); !s.ok()) return s;
  if (::mkdir(dir.c_str(), cache_.access.dir_mode()) != 0) {
    const int err = errno;
    return make_error(err == EEXIST ? Errc::already_exists : Errc::io_error,
                      "cannot create instance directory " + dir + ": " + std::strerror(err));
  }
  SpawnRollback rollback(*this, spec.uuid, dir);  // undoes whatever ends the spawn early, exceptions included
  {  // not readable by other users (a guest's disk): the exact mode, and the disk group if set
    UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d.valid())
      return make_error(Errc::io_error,
                        "cannot open instance directory " + dir + ": " + std::strerror(errno));
    if (Status s = cache_.access.apply(d.get(), true, dir); !s.ok()) return s;
  }
  DomainParams p;
  p.uuid = spec.uuid;
  p.name = spec.name;
  p.image_id = spec.image_id;
  p.domain_type = domain_type();
  p.memory_mb = spec.memory_mb;
  p.vcpus = spec.vcpus;
  p.disk_path = disk;
  p.console_log = dir + "/console.log";
  p.network = cfg_.libvirt.network;
  p.mac = random_mac();
  const std::string xml = domain_xml(p);

  // Defining a domain parses its XML (CPU) and does not open its disk; the
  // overlay's fsync waits on the device. So, once the base is in place, the
  // definition runs on a second thread while the overlay is written, and
  // start, which opens the disk, waits for both. libvirt's last error is per
  // thread: read where it failed.
  auto define = [&]() -> Status {
    return conn_.with([&](virConnectPtr c) -> Status {
      if (Domain known(virDomainLookupByUUIDString(c, spec.uuid.c_str())); known)
        return make_error(Errc::already_exists, "the hypervisor already has a domain with uuid " + spec.uuid);
      virResetLastError();
      Domain d(virDomainDefineXML(c, xml.c_str()));
      return d ? Status{} : Status{call_error("define", spec.uuid)};
    });
  };
  auto base =
      imagecache::with_base(cache_, spec.image_id, image->path, [&](const imagecache::EnsureOutcome& b) {
        // Under the base file's lock (the image-cache pass cannot remove the base
        // before the overlay uses it), after the fetch: a domain exists only
        // while its overlay is being written, never during a long download.
        rollback.defining = launch(define);
        return create_overlay_disk(overlay_writer_, b.base_path, image->format, disk, cache_.access);
      });
  Status defined = rollback.defining.valid() ? rollback.wait_define() : Status{};
  if (!base.ok()) return base.error();
  if (!defined.ok()) return defined;
  if (base->fetched)
    spdlog::info("libvirt: fetched image {} into {} ({} bytes)", spec.image_id, base->base_path, base->bytes);
  Status started = conn_.with([&](virConnectPtr c) -> Status {
    auto d = lookup(c, spec.uuid);
    if (!d.ok()) return d.error();
    return virDomainCreate(d->get()) < 0 ? Status{call_error("start", spec.uuid)} : Status{};
  });
  if (started.ok()) rollback.dismiss();
  return started;
}

Status LibvirtDriver::destroy(const std::string& uuid) {
  Status st = conn_.with([&](virConnectPtr c) -> Status {
    auto d = lookup(c, uuid);
    if (!d.ok()) return d.error().code == Errc::not_found ? Status{} : Status{d.error()};
    auto active = domain_is(virDomainIsActive(d->get()), "destroy", uuid);
    if (!active.ok()) return active.error().code == Errc::not_found ? Status{} : Status{active.error()};
    if (*active == DomainIs::yes && virDomainDestroy(d->get()) < 0) {
      Error e = call_error("destroy", uuid);
      if (e.code != Errc::conflict) return e;  // already stopped in between
      virResetLastError();
    }
    auto persistent = domain_is(virDomainIsPersistent(d->get()), "undefine", uuid);
    if (!persistent.ok())
      return persistent.error().code == Errc::not_found ? Status{} : Status{persistent.error()};
    if (*persistent == DomainIs::yes && virDomainUndefineFlags(d->get(), VIR_DOMAIN_UNDEFINE_NVRAM) < 0 &&
        virDomainUndefine(d->get()) < 0)
      return call_error("undefine", uuid);
    return {};
  });
  if (!st.ok()) return st;  // keep the disk while the domain may still exist
  if (is_uuid(uuid)) {
    std::error_code ec;
    fs::remove_all(instance_dir(uuid), ec);
    if (ec) return make_error(Errc::io_error, "cannot remove " + instance_dir(uuid) + ": " + ec.message());
  }
  return {};
}

Status LibvirtDriver::reboot(const std::string& uuid) {
  return conn_.with([&](virConnectPtr c) -> Status {
    auto d = lookup(c, uuid);
    if (!d.ok()) return d.error();
    auto active = domain_is(virDomainIsActive(d->get()), "reboot", uuid);
    if (!active.ok()) return active.error();
    if (*active == DomainIs::no)
      return make_error(Errc::conflict, "instance " + uuid + " is not running; start it before rebooting");
    if (virDomainReboot(d->get(), 0) < 0) {
      virResetLastError();
      if (virDomainReset(d->get(), 0) < 0) return call_error("reboot", uuid);
    }
    return {};
  });
}

Result<InterfaceInfo> LibvirtDriver::attach_interface(const std::string& uuid, const InterfaceSpec& spec) {
  return conn_.with([&](virConnectPtr c) -> Result<InterfaceInfo> {
    auto d = lookup(c, uuid);
    if (!d.ok()) return d.error();
    InterfaceInfo info{spec.mac.empty() ? random_mac() : spec.mac,
                       spec.network.empty() ? cfg_.libvirt.network : spec.network, spec.tag};
    const std::string xml = interface_xml(info.mac, info.network);
    auto flags = affect_flags(d->get(), uuid);
    if (!flags.ok()) return flags.error();
    if (virDomainAttachDeviceFlags(d->get(), xml.c_str(), *flags) < 0)
      return call_error("attach interface", uuid);
    return info;
  });
}

Status LibvirtDriver::detach_interface(const std::string& uuid, const std::string& mac) {
  return conn_.with([&](virConnectPtr c) -> Status {
    auto d = lookup(c, uuid);
    if (!d.ok()) return d.error();
    CStr xml(virDomainGetXMLDesc(d->get(), 0));
    if (!xml) return call_error("read definition", uuid);
    pugi::xml_document doc;
    doc.load_string(xml.get());
    for (auto iface : doc.child("domain").child("devices").children("interface")) {
      if (std::string(iface.child("mac").attribute("address").as_string()) != mac) continue;
      std::ostringstream os;
      iface.print(os, "", pugi::format_raw);
      auto flags = affect_flags(d->get(), uuid);
      if (!flags.ok()) return flags.error();
      if (virDomainDetachDeviceFlags(d->get(), os.str().c_str(), *flags) < 0)
        return call_error("detach interface", uuid);
      return {};
    }
    return make_error(Errc::not_found, "instance " + uuid + " has no interface with MAC " + mac);
  });
}

Result<ImageCacheReport> LibvirtDriver::manage_image_cache(const std::vector<InstanceRecord>& instances,
                                                           bool dry_run, std::stop_token stop) {
  imagecache::PassOptions opts;
  opts.instances_path = cfg_.instances_path();
  opts.subdirectory_name = cfg_.image_cache.subdirectory_name;
  opts.remove_unused = cfg_.image_cache.remove_unused_base_images;
  opts.original_min_age_seconds = cfg_.image_cache.remove_unused_original_minimum_age_seconds;
  opts.resized_min_age_seconds = cfg_.image_cache.remove_unused_resized_minimum_age_seconds;
  opts.lock_timeout_seconds = cfg_.image_cache.lock_timeout;
  opts.dry_run = dry_run;
  opts.stop = std::move(stop);
  return imagecache::run_pass(opts, instances);
}

}  // namespace virtcap::libvirt
