// Fuzzes what the image-cache pass reads from disks it does not trust: the
// multi-format probe (qcow2, qcow, QED, VMDK headers and descriptors, from a
// real fd), the VMDK extent and parent-hint readers on raw bytes, the
// backing-string classifier (plain, file:, json:, protocols) and the UTF-8
// sanitiser used for every file name in a report. Any bytes must give a
// result or an error, never a crash; a sanitised string must be valid UTF-8
// that nlohmann::json dumps without throwing.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/utf8.h"
#include "imagecache/backing_spec.h"
#include "imagecache/image_probe.h"
#include "imagecache/vmdk.h"

namespace ic = virtcap::imagecache;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_target(const ic::BackingTarget& t) {
  using K = ic::BackingTarget::Kind;
  if (t.kind == K::local) check(!t.path.empty());
  if (t.kind == K::unreadable) check(!t.detail.empty());
  const std::string safe = virtcap::utf8_safe(t.path + t.detail);
  check(virtcap::is_valid_utf8(safe));
  (void)nlohmann::json(safe).dump();  // must not throw
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_target(ic::classify_backing(text, "/instances/u1"));
  // The VMDK rules on the raw bytes: extents never empty, a named parent
  // hint never empty and within the 4095 bytes QEMU allows.
  for (const auto& e : ic::vmdk::extents(text)) check(!e.name.empty() && e.name.size() <= 511);
  const auto hint = ic::vmdk::parent_hint({data, size});
  if (hint.kind == ic::vmdk::ParentHint::Kind::named) check(!hint.name.empty() && hint.name.size() <= 4095);
  (void)ic::vmdk::probes_as_text_descriptor({data, size});

  static const int fd = ::memfd_create("image", 0);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0) std::abort();
  for (std::size_t off = 0; off < size;) {
    const ssize_t n = ::pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (n <= 0) std::abort();
    off += static_cast<std::size_t>(n);
  }
  static constexpr std::string_view kDeclared[] = {"", "qcow2", "qcow", "qed", "vmdk", "raw", "bogus"};
  const std::string_view declared = kDeclared[size ? data[size - 1] % 7 : 0];
  auto refs = ic::probe_image(fd, "fuzz-image", declared);
  if (!refs.ok()) {
    check(!refs.error().message.empty());
    return 0;
  }
  check(!refs->format.empty());
  if (!refs->backing.empty()) check_target(ic::classify_backing(refs->backing, "/instances/u1"));
  if (!refs->data_file.empty()) check_target(ic::classify_backing(refs->data_file, "/instances/u1"));
  for (const auto& e : refs->extents) check_target(ic::classify_backing(e.name, "/instances/u1"));
  return 0;
}
