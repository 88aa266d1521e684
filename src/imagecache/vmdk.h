// VMDK as QEMU's vmdk driver reads it (QEMU 7.2, block/vmdk.c behaviour, not
// its code): which other files a VMDK makes QEMU open. Pure functions over
// bytes, so the fuzzer and the tests can reach every rule without files.
//
//   - Text descriptor: a file QEMU's probe takes for a VMDK descriptor (comment
//     lines, blank lines of spaces, then "version=N" with N 1-3), or any file
//     opened with the vmdk format that is neither "KDMV" nor "COWD". Its text
//     is the first 1 MiB - 1 byte, up to the first NUL. Extents and the parent
//     hint are read from it.
//   - "KDMV" (monolithic sparse): with capacity 0 and a non-zero descriptor
//     offset, the embedded descriptor at that offset is a descriptor file whose
//     extents QEMU opens. Whatever the header says, the parent hint is read
//     from byte 512 (QEMU never looks at the header's descriptor fields for
//     it), so a zeroed descriptor offset or size still has a parent.
//   - "COWD" (old sparse): the parent hint at byte 512 as well.
//
// Extents: every line that QEMU's scanf pattern reads as
//   RW <sectors> <TYPE> "<name>" [<offset>]
// with at least the name matched, whatever the type (a superset: QEMU skips
// types it does not know, and refuses some malformed lines; naming more
// files can only keep more). FLAT and VMFS extents are raw data; SPARSE and
// VMFSSPARSE extents have a sparse header of their own, which is read again
// (an extent that is itself a descriptor holder is refused as unreadable).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace virtcap::imagecache::vmdk {

// QEMU reads the parent hint from this many bytes at the descriptor offset.
inline constexpr std::size_t kParentHintWindow = 20 * 512;
// ... and a descriptor text from at most this many bytes.
inline constexpr std::size_t kDescriptorMax = (std::size_t{1} << 20) - 1;
// Where the parent hint of a sparse ("KDMV", "COWD") file is read.
inline constexpr std::uint64_t kSparseHintOffset = 512;

enum class ExtentKind { flat, sparse, other };

struct Extent {
  std::string name;  // as written; relative names resolve against the descriptor's directory
  ExtentKind kind;
};

// True when QEMU's format probe takes these leading bytes (at most 512 are
// looked at) for a VMDK text descriptor.
bool probes_as_text_descriptor(std::span<const std::uint8_t> head);

// The extents a descriptor text names (the text is cut at its first NUL here).
std::vector<Extent> extents(std::string_view text);

struct ParentHint {
  enum class Kind { none, named, malformed } kind = Kind::none;
  std::string name;  // named: as written (QEMU opens it with the vmdk format)
  std::string why;   // malformed: in words
};
// The parentFileNameHint in `window`: the bytes read at the descriptor offset
// (up to kParentHintWindow; shorter when the file ends there, which QEMU reads
// as zeros).
ParentHint parent_hint(std::span<const std::uint8_t> window);

// The header fields of a "KDMV" file that decide whether it is a descriptor
// holder. `head` is the file's first bytes (missing bytes read as zero, as
// QEMU reads past the end of a file).
struct SparseHeader {
  std::uint64_t capacity = 0;
  std::uint64_t descriptor_offset = 0;  // in 512-byte sectors
  bool embedded_descriptor() const { return capacity == 0 && descriptor_offset != 0; }
};
SparseHeader sparse_header(std::span<const std::uint8_t> head);

}  // namespace virtcap::imagecache::vmdk
