// The one place a driver capability is declared.
//
// Add a capability by adding one line to VIRTCAP_CAPABILITIES: its C++ type,
// name, default, trait ("" for none) and one-line doc. Everything else - the
// struct member, the descriptor table, the table/JSON/markdown renderers, the
// trait list and docs/capabilities.md - is generated from that line.
//
// A driver declares what differs from the defaults with designated
// initializers (in declaration order), e.g.
//   inline constexpr Capabilities kMine{.has_imagecache = true};
// A misspelt name or a value of the wrong type does not compile.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string_view>

#include "virtcap/capability_schema.h"

// A value of the wrong type in a declaration is ill-formed narrowing (e.g. a
// string literal for a bool); GCC only warns about some of those by default.
// Make it an error in every translation unit that declares capabilities.
#pragma GCC diagnostic error "-Wnarrowing"

namespace virtcap {

// Disk image formats, each reported as trait COMPUTE_IMAGE_TYPE_<UPPER>.
enum class ImageFormat : std::uint8_t { raw, qcow2, iso, vmdk, vdi, vhd, vhdx, aki, ari, ami, ploop };

inline constexpr std::array kAllImageFormats = {ImageFormat::raw,  ImageFormat::qcow2, ImageFormat::iso,
                                                ImageFormat::vmdk, ImageFormat::vdi,   ImageFormat::vhd,
                                                ImageFormat::vhdx, ImageFormat::aki,   ImageFormat::ari,
                                                ImageFormat::ami,  ImageFormat::ploop};

constexpr std::string_view to_string(ImageFormat f) {
  constexpr std::array<std::string_view, kAllImageFormats.size()> names = {
      "raw", "qcow2", "iso", "vmdk", "vdi", "vhd", "vhdx", "aki", "ari", "ami", "ploop"};
  return names[static_cast<std::size_t>(f)];
}

constexpr std::optional<ImageFormat> image_format_from_string(std::string_view s) {
  for (auto f : kAllImageFormats)
    if (to_string(f) == s) return f;
  return std::nullopt;
}

// A set of image formats: a bitmask with set semantics. Constructible from a
// braced list, so a driver writes `.image_formats = {ImageFormat::raw}`.
class ImageFormats {
 public:
  constexpr ImageFormats() = default;
  constexpr ImageFormats(std::initializer_list<ImageFormat> formats) {
    for (auto f : formats) insert(f);
  }
  constexpr ImageFormats& insert(ImageFormat f) {
    bits_ |= bit(f);
    return *this;
  }
  constexpr bool contains(ImageFormat f) const { return (bits_ & bit(f)) != 0; }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr bool operator==(const ImageFormats&) const = default;

 private:
  static constexpr std::uint32_t bit(ImageFormat f) { return 1u << static_cast<unsigned>(f); }
  std::uint32_t bits_ = 0;
};

// The kind of hypervisor under the driver, discovered from its connection.
enum class VirtType : std::uint8_t { unknown, fake, test, qemu, kvm, lxc, xen };

inline constexpr std::array kAllVirtTypes = {VirtType::unknown, VirtType::fake, VirtType::test,
                                             VirtType::qemu,    VirtType::kvm,  VirtType::lxc,
                                             VirtType::xen};

constexpr std::string_view to_string(VirtType v) {
  constexpr std::array<std::string_view, kAllVirtTypes.size()> names = {"unknown", "fake", "test", "qemu",
                                                                        "kvm",     "lxc",  "xen"};
  return names[static_cast<std::size_t>(v)];
}

}  // namespace virtcap

template <>
struct virtcap::schema::TypeName<virtcap::ImageFormats> {
  static constexpr std::string_view value = "set<image_format>";
};
template <>
struct virtcap::schema::TypeName<virtcap::VirtType> {
  static constexpr std::string_view value = "enum<virt_type>";
};

// X(type, name, default, trait, doc)
// Names and traits follow Nova's, so that operators recognise them.
// clang-format off
#define VIRTCAP_CAPABILITIES(X)                                                                    \
  X(bool, has_imagecache, false, "",                                                               \
    "Driver keeps a base-image cache and wants the manager to run the image-cache pass")           \
  X(bool, supports_evacuate, false, "",                                                            \
    "Instances can be rebuilt on this host after their own host failed")                           \
  X(bool, supports_migrate_to_same_host, false, "COMPUTE_SAME_HOST_COLD_MIGRATE",                  \
    "A cold migration or resize may land on the host the instance is already on")                  \
  X(bool, supports_attach_interface, false, "COMPUTE_NET_ATTACH_INTERFACE",                        \
    "Network interfaces can be hot-plugged into and out of a running guest")                       \
  X(bool, supports_device_tagging, false, "COMPUTE_DEVICE_TAGGING",                                \
    "Devices given at boot can carry a tag that the guest sees in its metadata")                   \
  X(bool, supports_tagged_attach_interface, false, "COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG",        \
    "A hot-plugged network interface can carry a device tag")                                      \
  X(bool, supports_tagged_attach_volume, false, "COMPUTE_VOLUME_ATTACH_WITH_TAG",                  \
    "A hot-plugged volume can carry a device tag")                                                 \
  X(bool, supports_extend_volume, false, "COMPUTE_VOLUME_EXTEND",                                  \
    "An attached volume can be grown while the guest runs")                                        \
  X(bool, supports_multiattach, false, "COMPUTE_VOLUME_MULTI_ATTACH",                              \
    "One volume can be attached to several instances at once")                                     \
  X(bool, supports_trusted_certs, false, "COMPUTE_TRUSTED_CERTS",                                  \
    "Image signatures are verified against user-supplied trusted certificates")                    \
  X(bool, supports_pcpus, false, "",                                                               \
    "Dedicated (pinned) host CPUs can be given to guests")                                         \
  X(bool, supports_accelerators, false, "COMPUTE_ACCELERATORS",                                    \
    "Accelerator devices (e.g. FPGAs, GPUs) can be bound to guests")                               \
  X(bool, supports_secure_boot, false, "COMPUTE_SECURITY_UEFI_SECURE_BOOT",                        \
    "Guests can boot UEFI firmware with Secure Boot enforced")                                     \
  X(bool, supports_vtpm, false, "",                                                                \
    "Guests can be given an emulated TPM device")                                                  \
  X(virtcap::ImageFormats, image_formats, {}, "COMPUTE_IMAGE_TYPE_*",                              \
    "Disk image formats the driver can boot a guest from")                                         \
  X(virtcap::VirtType, virt_type, virtcap::VirtType::unknown, "",                                  \
    "Kind of hypervisor the driver is connected to")                                               \
  X(int, max_vcpus, 0, "",                                                                         \
    "Largest vCPU count one guest may have on this hypervisor (0: not reported)")
// clang-format on

namespace virtcap {

VIRTCAP_DEFINE_CAPABILITIES(Capabilities, VIRTCAP_CAPABILITIES);

// The defaults: what a driver that declares nothing gets.
inline constexpr Capabilities kDefaultCapabilities{};

}  // namespace virtcap
