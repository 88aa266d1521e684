// Native qcow2 overlay writer: the empty copy-on-write image a spawn puts in
// front of a cached base, written without running `qemu-img create`.
//
// The image is qcow2 version 3 with 64 KiB clusters and 16-bit refcounts, laid
// out as QEMU's docs/interop/qcow2.txt describes (the comments in
// qcow2_writer.cpp cite its sections):
//
//   cluster 0       header, backing-format header extension, end-of-extensions
//                   marker, then the backing file name
//   cluster 1       refcount table (one entry: the block in cluster 2)
//   cluster 2       refcount block (refcount 1 for every metadata cluster)
//   clusters 3..    the L1 table, all zero (nothing allocated: every read goes
//                   to the backing file)
//
// Only the non-zero bytes are written; the rest of the file is a hole. Three
// layers, each testable on its own:
//   - render_overlay(): pure, spec -> the bytes to write and the file length;
//   - write_overlay_fd(): puts them into an open, empty file;
//   - create_overlay(): temporary name, write, fsync, rename without replacing,
//     fsync of the directory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "imagecache/base_cache.h"
#include "virtcap/error.h"

namespace virtcap::imagecache {

inline constexpr std::uint32_t kOverlayClusterBits = 16;
inline constexpr std::uint64_t kOverlayClusterSize = std::uint64_t{1} << kOverlayClusterBits;
// QEMU caps the L1 table at 32 MiB; with 64 KiB clusters one L1 entry maps
// 512 MiB, so the largest virtual size is 4 Mi entries * 512 MiB = 2^51 bytes.
inline constexpr std::uint64_t kOverlayMaxVirtualSize = std::uint64_t{1} << 51;
// Virtual sizes are whole 512-byte sectors (QEMU rounds up the same way).
inline constexpr std::uint64_t kSectorSize = 512;
// The backing-format extension holds a short format name ("raw", "qcow2").
inline constexpr std::size_t kOverlayMaxFormatName = 15;

struct OverlaySpec {
  std::string backing_file;        // stored verbatim: 1..1023 bytes, no NUL
  std::string backing_format;      // e.g. "raw", "qcow2": 1..15 bytes of [a-z0-9_-]
  std::uint64_t virtual_size = 0;  // a multiple of 512, at most kOverlayMaxVirtualSize
};

// One run of non-zero bytes at a file offset.
struct OverlayPiece {
  std::uint64_t offset = 0;
  std::vector<std::uint8_t> bytes;
};

struct OverlayImage {
  std::vector<OverlayPiece> pieces;  // ascending, non-overlapping
  std::uint64_t file_size = 0;       // the file is extended (with a hole) to this length
  std::uint64_t l1_entries = 0;
  std::uint64_t metadata_clusters = 0;  // header + refcount table + block + L1 clusters
};

// Checks the spec (invalid_argument naming the field and the limit) and lays
// out the image. Pure: no I/O.
Result<OverlayImage> render_overlay(const OverlaySpec& spec);

// Writes the image into `fd`, which must refer to an empty regular file opened
// for writing: every piece with pwrite (short writes continued, EINTR retried),
// then ftruncate to file_size. No fsync. `path_for_errors` labels errors.
Status write_overlay_fd(int fd, const OverlayImage& image, const std::string& path_for_errors);

enum class Durability {
  none,                // no fsync (benchmarks, callers that sync later)
  file,                // fsync the file before the rename: the final name never
                       // refers to a partly written image (what spawn uses)
  file_and_directory,  // also fsync the directory after the rename, so the
                       // name itself survives a crash
};

// Creates `path` as an overlay: writes `path`.tmp-overlay (".tmp-" is the
// image cache's temporary-file marker, see base_cache.h) with O_EXCL and mode
// 0644 (before umask), fsyncs it (Durability::file and up), renames it to
// `path` without replacing anything already there (already_exists), then
// fsyncs the directory (Durability::file_and_directory). On any error the
// temporary file is removed and `path` is untouched.
// The file gets `access`'s mode and group (owner only by default).
Status create_overlay(const std::string& path, const OverlaySpec& spec,
                      Durability durability = Durability::file, const DiskAccess& access = {});

// The last steps of create_overlay, for a file written some other way (the
// `qemu-img create` path): fsync_file() opens `path`, gives it `access`'s
// mode and group (qemu-img creates 0644 less the umask) and fsyncs it;
// rename_into_place() renames `tmp` to `path` without replacing an existing
// file (already_exists; `tmp` is then removed) and, with
// Durability::file_and_directory, fsyncs the directory of `path`.
Status fsync_file(const std::string& path, const DiskAccess& access);
Status rename_into_place(const std::string& tmp, const std::string& path, Durability durability);

// The spec for an overlay over `base_path`, whose format the caller declares
// (the image repository's format; the base's contents are never probed, so a
// raw image whose guest wrote a qcow2 header stays raw):
//   - "qcow2": the virtual size from its header (read_header); unknown
//     incompatible features or encryption are refused, as QEMU would;
//   - "raw": the file's length (lseek to the end, so block devices work too);
// rounded up to whole 512-byte sectors. `virtual_size` > 0 asks for a larger
// (resized) disk: rounded up the same way, and smaller than the base is
// invalid_argument. The stored backing name is base_path as given.
Result<OverlaySpec> overlay_spec_for_base(const std::string& base_path, std::string_view base_format,
                                          std::uint64_t virtual_size = 0);

}  // namespace virtcap::imagecache
