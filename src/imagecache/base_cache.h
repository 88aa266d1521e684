// The base-image cache shared by spawn and the image-cache pass:
//   <instances_path>/<subdirectory_name>/<sha1-hex of image id>   the base file
//   <instances_path>/<subdirectory_name>/<sha1>.tmp-<random>      a fetch in progress
//   <instances_path>/locks/<base file name>.lock                  its lock
// Every change to a base file - fetch, touch, removal - happens under an
// exclusive flock on its lock file, so the image-cache pass can never remove a
// base file between a spawn's check and the overlay that starts using it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "virtcap/error.h"

namespace virtcap::imagecache {

inline constexpr std::string_view kTempMarker = ".tmp-";
// A fetch's temporary is <name>.tmp-<this many of [a-z0-9]>; the pass
// removes only names of exactly that pattern.
inline constexpr std::size_t kTempSuffixLength = 10;
inline constexpr std::string_view kLockDirName = "locks";

// How long a spawn's fetch or an image-cache pass waits for a base file's
// lock before giving up with a timeout error ([image_cache] lock_timeout).
inline constexpr int kDefaultLockTimeoutSeconds = 600;

inline std::string without_trailing_slash(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Who may read what the cache and spawn create (base files, overlays, the
// instance, base and lock directories): the owner only (files 0600,
// directories 0700), or also one group ([libvirt] disk_group: 0640 / 0750,
// that group set on each), for QEMU running as another user. Applied
// exactly, whatever the umask; existing directories keep their modes.
struct DiskAccess {
  std::optional<gid_t> group;
  mode_t file_mode() const { return group ? 0640 : 0600; }
  mode_t dir_mode() const { return group ? 0750 : 0700; }
  // fchmod (and fchown to the group) of an open file or directory.
  Status apply(int fd, bool directory, const std::string& path) const;
};

struct BaseCache {
  std::string instances_path;
  std::string base_dir;  // <instances_path>/<subdirectory_name>
  int lock_timeout_seconds = kDefaultLockTimeoutSeconds;
  DiskAccess access;

  BaseCache(std::string instances_path_, const std::string& subdirectory_name)
      : instances_path(without_trailing_slash(std::move(instances_path_))),
        base_dir(instances_path + "/" + subdirectory_name) {}

  static std::string base_name(std::string_view image_id);  // sha1 hex
  std::string base_path(std::string_view image_id) const { return base_dir + "/" + base_name(image_id); }
  std::string lock_dir() const { return instances_path + "/" + std::string(kLockDirName); }
  // The lock of a base file, by its file name (resized variants included).
  // A temporary "<name>.tmp-<x>" shares the lock of <name>: the fetch that
  // writes it holds that lock.
  std::string lock_path(std::string_view base_file_name) const;
  // The base file name whose lock guards `file_name` (itself, or the stem of
  // a temporary).
  static std::string_view lock_owner(std::string_view file_name);
};

// A directory of the cache that the pass and spawn write and delete in
// (the base directory, the lock directory), opened and checked once; every
// create and unlink in it is relative to `fd`.
struct CacheDir {
  UniqueFd fd;
  std::string path;  // for messages only
};
enum class CreateDir { no, yes };
// Opens <instances_path>/<name> with O_DIRECTORY | O_NOFOLLOW relative to
// instances_path, and refuses it unless it is a real directory on the same
// mount as instances_path: a symlink, a bind mount or another device is an
// io_error that says so, and nothing is written there. A missing one is
// not_found (CreateDir::yes: it is made first, with its parents).
Result<CacheDir> open_cache_dir(const std::string& instances_path, std::string_view name, CreateDir create);

// An exclusive flock on a base file's lock file, released on destruction.
class BaseFileLock {
 public:
  // Waits up to cache.lock_timeout_seconds for the lock (timeout: an error
  // that says who may hold it). Creates the lock directory if needed. The lock
  // file is opened with O_NOFOLLOW, and after flock the path is checked to
  // still be that file, so a lock file removed by the cleanup is never
  // "held" by two processes at once.
  // The lock directory is opened with open_cache_dir (a symlinked or
  // mounted one is refused).
  static Result<BaseFileLock> acquire(const BaseCache& cache, std::string_view base_file_name);
  // The same in a lock directory already opened with open_cache_dir.
  static Result<BaseFileLock> acquire_in(const CacheDir& locks, std::string_view base_file_name,
                                         int timeout_seconds);
  // Takes the lock only if it is free and its lock file exists; nullopt
  // otherwise (busy, or no lock file). For cleaning up lock files.
  static Result<std::optional<BaseFileLock>> try_existing(const CacheDir& locks,
                                                          std::string_view base_file_name);
  BaseFileLock(BaseFileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  BaseFileLock& operator=(BaseFileLock&&) = delete;
  BaseFileLock(const BaseFileLock&) = delete;
  ~BaseFileLock();

 private:
  explicit BaseFileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

struct EnsureOutcome {
  std::string base_path;
  bool fetched = false;  // false: it was already cached
  std::uint64_t bytes = 0;
};

// With the base file's lock held: fetches `source` into the cache if it is
// missing (copy to a temporary name, fsync, rename, fsync the directory),
// touches its mtime, and returns. The caller passes `under_lock` to do more
// while the lock is held (spawn creates its overlay there).
template <class F>
Result<EnsureOutcome> with_base(const BaseCache& cache, std::string_view image_id, const std::string& source,
                                F&& under_lock);

// The pieces with_base is made of, for callers that hold the lock themselves.
Result<EnsureOutcome> ensure_base_locked(const BaseCache& cache, std::string_view image_id,
                                         const std::string& source);
Status touch(const std::string& path);
// fsync(2) of a directory, so a rename or create in it is durable.
Status fsync_dir(const std::string& dir);
// mkdir -p; the directories it creates get `access`'s mode and group.
// io_error naming the directory.
Status make_dirs(const std::string& dir, const DiskAccess& access = {});
// Copies src to dst (which must not exist; created with `access`), only its
// data ranges (SEEK_DATA/SEEK_HOLE: a sparse image stays sparse), then
// fsyncs dst. Returns the file's length.
Result<std::uint64_t> copy_file_synced(const std::string& src, const std::string& dst,
                                       const DiskAccess& access = {});

template <class F>
Result<EnsureOutcome> with_base(const BaseCache& cache, std::string_view image_id, const std::string& source,
                                F&& under_lock) {
  auto lock = BaseFileLock::acquire(cache, BaseCache::base_name(image_id));
  if (!lock.ok()) return lock.error();
  auto out = ensure_base_locked(cache, image_id, source);
  if (!out.ok()) return out;
  if (Status st = under_lock(out.value()); !st.ok()) return st.error();
  return out;
}

}  // namespace virtcap::imagecache
