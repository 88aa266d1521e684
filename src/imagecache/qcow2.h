// Native qcow2 header reader: what an image cache needs to know about a disk
// (virtual size, backing file, backing format, the chain below it) without
// running qemu-img.
//
// Two layers:
//   - parse_header(): a pure parser over the first bytes of a file. It never
//     reads outside the span it is given and never trusts an offset or a
//     length from the file without an overflow-safe bounds check.
//   - read_header() / read_header_fd() / backing_chain(): the file side, with
//     open + one pread of the file's head (+ one pread for a far-away backing
//     name) + close, and no heap buffer for the common case.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "virtcap/error.h"

namespace virtcap::imagecache {

enum class Qcow2Errc {
  not_qcow2,            // the magic is not "QFI\xfb"
  truncated,            // the file (or the bytes supplied) ends inside the header
  unsupported_version,  // version not 2 or 3, or a cluster size qcow2 does not allow
  offset_past_eof,      // the backing file name lies (partly) past the end of the file
  name_too_long,        // backing file name longer than kQcow2MaxBackingName bytes
  nul_in_name,          // a NUL byte inside the backing file name
  bad_extension,        // a header extension (or the header itself) overruns its area
  chain_loop,           // a backing chain refers back to an image already in it
  chain_too_deep,       // a backing chain longer than the caller's limit
  io_error,             // open/pread failed
};

std::string_view to_string(Qcow2Errc code);

struct Qcow2Error {
  Qcow2Errc code = Qcow2Errc::io_error;
  std::string path;    // the file concerned; empty when parse_header() ran on bare bytes
  std::string detail;  // the specific facts, e.g. offsets and sizes
  int sys_errno = 0;   // for io_error: the errno of the failing call

  // One sentence naming the file and what is wrong, e.g.
  // "'/var/lib/x/disk' has a NUL byte inside its qcow2 backing file name: at byte 3 of 8 (\"bas\x00.raw\")."
  std::string describe() const;
};

// QEMU refuses backing file names longer than this.
inline constexpr std::uint32_t kQcow2MaxBackingName = 1023;
// The most of the file's head read_header() reads: the header and its
// extensions must lie within it. (It first reads one 4 KiB page, which holds
// the whole header area of every image QEMU writes, and reads the rest of
// these bytes only when the header area runs past that page.)
inline constexpr std::size_t kQcow2HeadRead = 64 * 1024;
// parse_header()'s file_size when the caller does not know it (e.g. it read a
// full buffer without stat-ing). The name's bounds are then checked when the
// caller fetches it: a short read means offset_past_eof.
inline constexpr std::uint64_t kQcow2UnknownFileSize = std::numeric_limits<std::uint64_t>::max();

struct Qcow2Header {
  std::uint32_t version = 0;  // 2 ("compat=0.10") or 3 ("compat=1.1")
  std::uint64_t backing_file_offset = 0;
  std::uint32_t backing_file_size = 0;
  std::uint32_t cluster_bits = 0;  // 9..21
  std::uint64_t virtual_size = 0;  // bytes the guest sees
  std::uint32_t crypt_method = 0;  // 0 none, 1 AES (legacy), 2 LUKS
  std::uint32_t nb_snapshots = 0;
  // Version 3 fields; a version 2 header reads as all zero, refcount_order 4
  // (16-bit refcounts) and header_length 72.
  std::uint64_t incompatible_features = 0;
  std::uint64_t compatible_features = 0;
  std::uint64_t autoclear_features = 0;
  std::uint32_t refcount_order = 4;
  std::uint32_t header_length = 72;
  std::uint8_t compression_type = 0;  // 0 zlib, 1 zstd; only when header_length > 104

  // The backing file name exactly as stored (not resolved); empty if none.
  std::string backing_file;
  // From the backing-format header extension; empty if the image declares none.
  std::string backing_format;
  // From the external data file extension (qcow2.txt, "Header extensions":
  // 0x44415441); empty if none. Only meaningful with the external data file
  // incompatible feature bit (bit 2) set: then QEMU opens this file too.
  std::string data_file;
  // True when backing_file names a file. False for protocol names such as
  // "nbd:host:10809" or "json:{...}" (a ':' before any '/'), which are not
  // files and must not be resolved or opened; also false without a backing file.
  bool backing_is_path = false;

  // 0 when the parse is complete. Otherwise the backing file name lies (at
  // least partly) beyond the bytes given to parse_header(): the caller fetches
  // backing_file_size bytes at backing_file_offset and hands them to
  // complete_backing_name(). needed_bytes is then backing_file_offset +
  // backing_file_size, the length of the prefix that would have covered it.
  std::uint64_t needed_bytes = 0;

  bool has_backing() const { return backing_file_offset != 0 && backing_file_size != 0; }
  // Incompatible feature bit 2: guest data lives in an external data file.
  bool has_external_data_file() const { return (incompatible_features & (std::uint64_t{1} << 2)) != 0; }
  bool backing_name_pending() const { return needed_bytes != 0; }
  std::uint64_t cluster_size() const { return std::uint64_t{1} << cluster_bits; }
};

// True when the bytes start with the qcow2 magic "QFI\xfb".
bool has_qcow2_magic(std::span<const std::uint8_t> bytes);

// Parses the header at the beginning of a file. `bytes` is the file's head
// (possibly shorter than the file); `file_size` its total size, or
// kQcow2UnknownFileSize. (Bytes present are evidently in the file, so the
// effective size is never taken below bytes.size().)
//
// The header and its extensions must lie within `bytes` (QEMU keeps them at
// the start of the first cluster; a shorter span is reported as truncated).
// Only the backing file name may lie beyond `bytes`: see needed_bytes.
// Errors carry an empty path; callers that know the file set it.
Result<Qcow2Header, Qcow2Error> parse_header(std::span<const std::uint8_t> bytes, std::uint64_t file_size);

// Finishes a parse that stopped with needed_bytes != 0: `name` is what the
// caller read at backing_file_offset (it may be short if the file ended).
// Checks it (offset_past_eof if short, nul_in_name) and fills backing_file and
// backing_is_path. A no-op success when nothing was pending.
Result<void, Qcow2Error> complete_backing_name(Qcow2Header& header, std::span<const std::uint8_t> name);

// Reads and parses the header of the file at `path`: open(O_RDONLY|O_CLOEXEC)
// (symlinks are followed: disks may be symlinks), one pread of the first 4 KiB
// (a second for the rest of the first kQcow2HeadRead bytes only if the header
// area is longer), one more pread only for a backing name beyond the bytes
// read, close. No fstat: a short read tells the file size, and a short read of
// the name tells it lies past the end. Errors name `path`.
Result<Qcow2Header, Qcow2Error> read_header(const std::string& path);

// The size of the first read of a file's head (one page). Callers that probe
// a file's format read this many bytes at offset 0 (retrying short reads
// until the end of the file) and pass them to read_header_with_head().
inline constexpr std::size_t kQcow2FirstRead = 4096;

// read_header_fd() for a caller that already read the file's first bytes:
// `first` is at most kQcow2FirstRead bytes read from offset 0, shorter only
// at the end of the file. More is read from fd only when the header area or
// the backing name lies beyond them.
Result<Qcow2Header, Qcow2Error> read_header_with_head(int fd, const std::string& path_for_errors,
                                                      std::span<const std::uint8_t> first);

// The same on an fd the caller owns (not closed; its file offset is not used
// or moved). `path_for_errors` only labels errors.
Result<Qcow2Header, Qcow2Error> read_header_fd(int fd, const std::string& path_for_errors);

// The full path of a backing file as written in `disk_path`'s header:
// absolute names are lexically normalised; relative names are resolved against
// the directory of disk_path (lexically, no symlink resolution), as QEMU does;
// protocol names ("nbd:...", "json:{...}", also "file:...") come back
// unchanged. An empty backing gives "".
std::string resolve_backing(const std::string& disk_path, const std::string& backing);

// True when `name` is a protocol name rather than a file path: it contains a
// ':' before any '/'.
bool backing_has_protocol(std::string_view name);

struct ChainLink {
  std::string path;     // resolved path (or the protocol name when !is_file)
  std::string format;   // "qcow2", "raw", or the declared backing format ("" if unknown)
  bool is_file = true;  // false for a protocol backing, which is reported, not opened
};

// The image at `path` and everything below it, top first: follows qcow2
// backing files until a non-qcow2 image or an image without a backing file.
//   - the top image, and backings with no declared format, are probed by magic
//     (qcow2 magic: parsed and followed; anything else: "raw", end of chain);
//   - a backing declared "qcow2" is parsed (not_qcow2 if it is not one);
//   - a backing declared any other format ("raw", "vmdk", ...) is reported
//     with that format and not opened;
//   - a protocol backing is reported (is_file = false) and ends the chain.
// max_depth bounds the number of links, the top image included: more is
// chain_too_deep. An image that appears twice (same device and inode, so
// symlinks and "./" spellings do not hide a loop) is chain_loop.
Result<std::vector<ChainLink>, Qcow2Error> backing_chain(const std::string& path, int max_depth = 16);

}  // namespace virtcap::imagecache
