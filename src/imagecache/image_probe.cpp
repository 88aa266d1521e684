#include "imagecache/image_probe.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <span>
#include <system_error>
#include <vector>

#include "common/fd.h"
#include "imagecache/qcow2.h"
#include "imagecache/vmdk.h"

namespace virtcap::imagecache {
namespace {

using Bytes = std::span<const std::uint8_t>;

std::uint32_t be32(Bytes b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) | (std::uint32_t{b[at + 2]} << 8) |
         b[at + 3];
}
std::uint64_t be64(Bytes b, std::size_t at) { return (std::uint64_t{be32(b, at)} << 32) | be32(b, at + 4); }
std::uint32_t le32(Bytes b, std::size_t at) {
  return std::uint32_t{b[at]} | (std::uint32_t{b[at + 1]} << 8) | (std::uint32_t{b[at + 2]} << 16) |
         (std::uint32_t{b[at + 3]} << 24);
}
std::uint64_t le64(Bytes b, std::size_t at) { return le32(b, at) | (std::uint64_t{le32(b, at + 4)} << 32); }

bool starts_with(Bytes b, std::string_view magic) {
  return b.size() >= magic.size() && std::memcmp(b.data(), magic.data(), magic.size()) == 0;
}

ProbeError fail(const std::string& path, const std::string& what, int err = 0) {
  return {"'" + path + "' " + what + (err ? std::string(": ") + std::system_category().message(err) : ""),
          err};
}

// A name of `size` bytes at `offset`: from the head when it lies there, else
// read. No NUL inside, never past the end of the file.
Result<std::string, ProbeError> read_name(int fd, const std::string& path, Bytes head, std::uint64_t offset,
                                          std::uint64_t size, const char* what) {
  if (size > kQcow2MaxBackingName)
    return fail(path, std::string("has a ") + what + " longer than 1023 bytes");
  std::string name(size, '\0');
  if (offset <= head.size() && size <= head.size() - offset) {
    std::memcpy(name.data(), head.data() + offset, size);
  } else {
    if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - size)
      return fail(path, std::string("has its ") + what + " past any possible end of file");
    const long long n = pread_full(fd, reinterpret_cast<std::uint8_t*>(name.data()), size, offset);
    if (n < 0) return fail(path, std::string("cannot be read (its ") + what + ")", static_cast<int>(-n));
    if (static_cast<std::uint64_t>(n) < size) return fail(path, std::string("ends inside its ") + what);
  }
  if (name.find('\0') != std::string::npos)
    return fail(path, std::string("has a NUL byte inside its ") + what);
  return name;
}

Result<ImageRefs, ProbeError> probe_qcow2(int fd, const std::string& path, Bytes head) {
  auto h = read_header_with_head(fd, path, head);
  if (!h.ok()) return ProbeError{h.error().describe(), h.error().sys_errno};
  ImageRefs r{"qcow2", h->backing_file, h->backing_format, {}, {}};
  if (h->has_external_data_file()) {
    if (h->data_file.empty())
      return fail(path,
                  "declares an external data file but names none (QEMU then needs it on the command line)");
    r.data_file = h->data_file;
  }
  return r;
}

// qcow (version 1), big-endian: backing_file_offset u64 @8, backing_file_size u32 @16.
Result<ImageRefs, ProbeError> probe_qcow(int fd, const std::string& path, Bytes head) {
  if (head.size() < 48) return fail(path, "is a truncated qcow (v1) image");
  ImageRefs r{"qcow", {}, {}, {}, {}};
  const std::uint64_t off = be64(head, 8);
  const std::uint32_t size = be32(head, 16);
  if (off == 0 || size == 0) return r;
  auto name = read_name(fd, path, head, off, size, "qcow backing file name");
  if (!name.ok()) return name.error();
  r.backing = std::move(name.value());
  return r;
}

// QED, little-endian: features u64 @16, backing_filename_offset u32 @56,
// backing_filename_size u32 @60. Features: 1 backing file, 2 needs check,
// 4 backing format is raw (no probing). Others: QEMU refuses the image.
Result<ImageRefs, ProbeError> probe_qed(int fd, const std::string& path, Bytes head) {
  if (head.size() < 64) return fail(path, "is a truncated QED image");
  constexpr std::uint64_t kBacking = 1, kNeedCheck = 2, kRawBacking = 4;
  const std::uint64_t features = le64(head, 16);
  if (features & ~(kBacking | kNeedCheck | kRawBacking))
    return fail(path, "is a QED image with unknown feature bits");
  ImageRefs r{"qed", {}, {}, {}, {}};
  if (!(features & kBacking)) return r;
  auto name = read_name(fd, path, head, le32(head, 56), le32(head, 60), "QED backing file name");
  if (!name.ok()) return name.error();
  if (name->empty()) return fail(path, "is a QED image whose backing file name is empty");
  r.backing = std::move(name.value());
  if (features & kRawBacking) r.backing_format = "raw";
  return r;
}

// Up to `len` bytes at `offset`, fewer where the file ends.
Result<std::vector<std::uint8_t>, ProbeError> read_at(int fd, const std::string& path, std::uint64_t offset,
                                                      std::size_t len, const char* what) {
  std::vector<std::uint8_t> buf(len);
  const long long n = pread_full(fd, buf.data(), len, offset);
  if (n < 0) return fail(path, std::string("cannot be read (its ") + what + ")", static_cast<int>(-n));
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

// A descriptor text as QEMU reads it: min(file size, 1 MiB - 1) bytes from
// `offset`. Its extents go into `r`; the bytes are returned.
Result<std::vector<std::uint8_t>, ProbeError> read_extents(int fd, const std::string& path,
                                                           std::uint64_t offset, ImageRefs& r) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(path, "cannot be stat()ed", errno);
  const auto len = std::min<std::uint64_t>(static_cast<std::uint64_t>(st.st_size), vmdk::kDescriptorMax);
  auto text = read_at(fd, path, offset, static_cast<std::size_t>(len), "VMDK descriptor");
  if (text.ok())
    r.extents = vmdk::extents(std::string_view(reinterpret_cast<const char*>(text->data()), text->size()));
  return text;
}

// VMDK as QEMU reads it (vmdk.h): a text descriptor's extents, a "KDMV"
// descriptor holder's extents, and the parent hint - at byte 512 of a sparse
// file whatever its header says, at byte 0 of a text descriptor.
Result<ImageRefs, ProbeError> probe_vmdk(int fd, const std::string& path, Bytes head) {
  ImageRefs r{"vmdk", {}, {}, {}, {}};
  std::vector<std::uint8_t> window;  // the bytes QEMU reads the parent hint from
  if (!starts_with(head, "KDMV") && !starts_with(head, "COWD")) {
    // A text descriptor: the hint window is the start of the text just read
    // (the text reaches the end of the file or 1 MiB, past the window).
    auto text = read_extents(fd, path, 0, r);
    if (!text.ok()) return text.error();
    text->resize(std::min(text->size(), vmdk::kParentHintWindow));
    window = std::move(*text);
  } else {
    const auto h = vmdk::sparse_header(head);
    if (starts_with(head, "KDMV") && h.embedded_descriptor()) {
      if (h.descriptor_offset > (std::numeric_limits<std::uint64_t>::max() >> 10))
        return fail(path, "has an implausible VMDK descriptor offset");
      if (auto text = read_extents(fd, path, h.descriptor_offset * 512, r); !text.ok()) return text.error();
    }
    auto read = read_at(fd, path, vmdk::kSparseHintOffset, vmdk::kParentHintWindow, "VMDK parent hint");
    if (!read.ok()) return read.error();
    window = std::move(*read);
  }
  auto hint = vmdk::parent_hint(window);
  if (hint.kind == vmdk::ParentHint::Kind::malformed) return fail(path, "is a VMDK image whose " + hint.why);
  if (hint.kind == vmdk::ParentHint::Kind::named) {
    r.backing = std::move(hint.name);
    r.backing_format = "vmdk";  // QEMU opens a VMDK parent as VMDK
  }
  return r;
}

}  // namespace

bool format_has_no_references(std::string_view f) {
  static constexpr std::array<std::string_view, 9> kNone = {"raw",       "vdi", "vpc",   "vhdx", "luks",
                                                            "parallels", "dmg", "cloop", "bochs"};
  return std::find(kNone.begin(), kNone.end(), f) != kNone.end();
}

Result<ImageRefs, ProbeError> probe_image(int fd, const std::string& path, std::string_view declared) {
  if (format_has_no_references(declared)) return ImageRefs{std::string(declared), {}, {}, {}, {}};
  if (!declared.empty() && declared != "qcow2" && declared != "qcow" && declared != "qed" &&
      declared != "vmdk")
    return fail(path,
                "is declared as format \"" + std::string(declared) + "\", which this reader does not know");
  std::array<std::uint8_t, kQcow2FirstRead> buf;
  const long long n = pread_full(fd, buf.data(), buf.size(), 0);
  if (n < 0) return fail(path, "cannot be read", static_cast<int>(-n));
  const Bytes head(buf.data(), static_cast<std::size_t>(n));

  std::string_view format = "raw";
  if (starts_with(head, "QFI\xfb")) {
    if (head.size() < 8) return fail(path, "is a truncated qcow image");
    format = be32(head, 4) == 1 ? "qcow" : "qcow2";  // qcow2's reader refuses other versions
  } else if (starts_with(head, std::string_view("QED\0", 4))) {
    format = "qed";
  } else if (starts_with(head, "KDMV") || starts_with(head, "COWD") ||
             vmdk::probes_as_text_descriptor(head)) {
    format = "vmdk";
  }
  // QEMU's vmdk driver reads any file that is neither "KDMV" nor "COWD" as a
  // text descriptor, whatever its magic.
  if (declared == "vmdk" && !starts_with(head, "KDMV") && !starts_with(head, "COWD")) format = "vmdk";
  if (!declared.empty() && declared != format)
    return fail(path, "is declared " + std::string(declared) + " but its magic says " + std::string(format));
  if (format == "qcow2") return probe_qcow2(fd, path, head);
  if (format == "qcow") return probe_qcow(fd, path, head);
  if (format == "qed") return probe_qed(fd, path, head);
  if (format == "vmdk") return probe_vmdk(fd, path, head);
  return ImageRefs{"raw", {}, {}, {}, {}};
}

}  // namespace virtcap::imagecache
