// Which base files the disks on the storage use, by identity.
//
// A base file is known by (st_dev, st_ino) from fstatat(AT_SYMLINK_NOFOLLOW)
// in the base directory. A disk uses a base when any file it opens, at any
// depth of its chain, IS that file:
//   - the disk itself (a symlink or a hard link to the base);
//   - each backing file, qcow2 external data file, VMDK extent and VMDK
//     parent, resolved as QEMU resolves it (backing_spec.h, vmdk.h) and
//     stat()ed (symlinks followed).
// An image reached again is read again unless it is the same file opened
// as the same format from the same directory spelling (what decides what
// QEMU opens next from it).
// A backing path that does not exist here but whose last component is the
// name of a base file protects that base ("by name": the same storage
// mounted at another path on another host). A missing backing that names no
// base file is reported, and blocks nothing. Every other failure - listing a
// directory (getdents64 errors are read, never taken for the end), stat,
// open, read, a backing that cannot be followed, a directory nested deeper
// than kMaxDirDepth - is an unreadable entry: the caller must then remove
// nothing. FIFOs, sockets and devices are never opened.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "virtcap/driver.h"

namespace virtcap::imagecache {

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};
struct FileIdHash {
  std::size_t operator()(const FileId& f) const noexcept {
    return std::hash<std::uint64_t>{}(static_cast<std::uint64_t>(f.ino) * 0x9E3779B97F4A7C15ULL ^ f.dev);
  }
};

// Directories are scanned down to this many levels below instances_path:
// instances/<uuid>/a/b/c. A deeper directory makes the scan unreadable there.
inline constexpr int kMaxDirDepth = 4;
// The longest backing chain followed (the top image included). QEMU itself
// sets no depth: it opens a chain as long as its open-file limit allows, and
// so does the pass up to this guard, far beyond such limits in practice. A
// cycle (the same file, format and directory twice in one chain) and ELOOP
// are found long before it.
inline constexpr std::size_t kMaxChainDepth = 8192;

struct BaseEntry {
  std::string name;
  FileId id;
};

struct ScanOptions {
  std::string instances_path;
  // Top-level names under instances_path that are not instance directories.
  std::vector<std::string> reserved;
  std::size_t progress_every = 0;  // log every this many disks (0: never)
};

struct BaseUse {
  bool used = false;
  bool by_name_only = false;  // protected only by the missing-path name fallback
  std::string by;             // the first disk found using it (for the report)
};

struct UsageScan {
  std::vector<BaseUse> use;  // parallel to the bases passed in
  std::vector<UnreadableDisk> unreadable;
  std::vector<MissingBacking> missing;  // missing backings that name no base file
  std::size_t name_matches = 0;         // missing backings whose name matched a base
  std::size_t instance_dirs = 0;
  std::size_t disks_read = 0;
};

UsageScan scan_usage(const ScanOptions& opts, const std::vector<BaseEntry>& bases);

}  // namespace virtcap::imagecache
