#include "imagecache/base_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "common/fd.h"
#include "common/lock_file.h"
#include "common/mount_id.h"
#include "common/sha1.h"

namespace virtcap::imagecache {

namespace {

Error io_error(const std::string& what, int err) {
  return make_error(Errc::io_error, what + ": " + std::strerror(err));
}

using Fd = UniqueFd;

std::string random_suffix() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (std::size_t i = 0; i < kTempSuffixLength; ++i) s += kChars[rng() % (sizeof kChars - 1)];
  return s;
}

}  // namespace

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return io_error("cannot open directory " + dir, errno);
  if (::fsync(fd.get()) != 0) return io_error("cannot fsync directory " + dir, errno);
  return {};
}

Status DiskAccess::apply(int fd, bool directory, const std::string& path) const {
  if (::fchmod(fd, directory ? dir_mode() : file_mode()) != 0)
    return io_error("cannot set the mode of " + path, errno);
  if (group && ::fchown(fd, static_cast<uid_t>(-1), *group) != 0)
    return io_error("cannot give " + path + " to group " + std::to_string(*group) + " ([libvirt] disk_group)",
                    errno);
  return {};
}

Status make_dirs(const std::string& dir, const DiskAccess& access) {
  // Each missing component, from the top: mkdir, then the exact mode.
  return virtcap::make_dirs(dir, access.dir_mode(), "directory", [&access](int fd, const std::string& path) {
    return access.apply(fd, true, path);
  });
}

std::string BaseCache::base_name(std::string_view image_id) { return sha1_hex(image_id); }

std::string BaseCache::lock_path(std::string_view base_file_name) const {
  return lock_dir() + "/" + std::string(base_file_name) + ".lock";
}

std::string_view BaseCache::lock_owner(std::string_view file_name) {
  const auto t = file_name.find(kTempMarker);
  return t == std::string_view::npos ? file_name : file_name.substr(0, t);
}

namespace {

enum class LockMode { wait, try_existing };

// Opens and flocks <locks>/<name>.lock (never following a symlink); then
// checks that the name still names the file locked (the cleanup may have
// unlinked it meanwhile) and retries if not.
Result<std::optional<BaseFileLock>> lock_named(const CacheDir& locks, std::string_view name, LockMode mode,
                                               int timeout_seconds, BaseFileLock (*wrap)(int)) {
  const std::string file = std::string(name) + ".lock";
  const std::string path = locks.path + "/" + file;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    const int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (mode == LockMode::wait ? O_CREAT : 0);
    Fd fd(::openat(locks.fd.get(), file.c_str(), flags, 0600));
    if (!fd.valid()) {
      if (mode == LockMode::try_existing && errno == ENOENT) return std::optional<BaseFileLock>{};
      return io_error("cannot open lock file " + path, errno);
    }
    const int err = lock_file(fd.get());
    if (err != 0 && err != EWOULDBLOCK) return io_error("cannot lock " + path, err);
    if (err != 0) {
      if (mode == LockMode::try_existing) return std::optional<BaseFileLock>{};
      if (std::chrono::steady_clock::now() >= deadline)
        return make_error(Errc::io_error,
                          "timed out after " + std::to_string(timeout_seconds) + " s waiting for " + path +
                              " (held by a spawn fetching that base image, or by an image-cache "
                              "pass); raise [image_cache] lock_timeout or try again");
      // flock has no timed wait: poll, backing off to 50 ms.
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
      continue;
    }
    struct stat held {
    }, now{};
    if (::fstat(fd.get(), &held) != 0) return io_error("cannot stat lock file " + path, errno);
    const int lrc = ::fstatat(locks.fd.get(), file.c_str(), &now, AT_SYMLINK_NOFOLLOW);
    if (lrc == 0 && now.st_dev == held.st_dev && now.st_ino == held.st_ino)
      return std::optional<BaseFileLock>{wrap(fd.release())};
    if (lrc != 0 && errno != ENOENT) return io_error("cannot stat lock file " + path, errno);
    if (mode == LockMode::try_existing) return std::optional<BaseFileLock>{};
    // Unlinked (and maybe re-created) since we opened it: lock the current one.
  }
}

std::string where(const MountPlace& p) {
  return "device " + std::to_string(p.dev_major) + ":" + std::to_string(p.dev_minor) +
         (p.has_mnt_id ? ", mount " + std::to_string(p.mnt_id) : "");
}

}  // namespace

Result<CacheDir> open_cache_dir(const std::string& instances_path, std::string_view name, CreateDir create) {
  const std::string path = instances_path + "/" + std::string(name);
  if (create == CreateDir::yes) {
    if (Status st = make_dirs(path); !st.ok()) return st.error();
  }
  Fd top(::open(instances_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!top.valid()) {
    const int err = errno;
    return make_error(err == ENOENT ? Errc::not_found : Errc::io_error,
                      "cannot open " + instances_path + ": " + std::strerror(err));
  }
  CacheDir dir{
      Fd(::openat(top.get(), std::string(name).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)),
      path};
  if (!dir.fd.valid()) {
    const int err = errno;
    if (err == ENOENT) return make_error(Errc::not_found, "no directory " + path);
    if (err == ELOOP || err == ENOTDIR)
      return make_error(Errc::io_error,
                        "refusing " + path +
                            ": it is not a real directory (a symlink, or another kind of file); "
                            "the image cache writes and deletes only in its own directories");
    return io_error("cannot open " + path, err);
  }
  MountPlace top_at, dir_at;
  if (int err = mount_place(top.get(), top_at); err != 0)
    return io_error("cannot statx " + instances_path, err);
  if (int err = mount_place(dir.fd.get(), dir_at); err != 0) return io_error("cannot statx " + path, err);
  if (!dir_at.is_dir || dir_at.dev_major != top_at.dev_major || dir_at.dev_minor != top_at.dev_minor ||
      dir_at.mnt_id != top_at.mnt_id)
    return make_error(Errc::io_error,
                      "refusing " + path + ": it is on " + where(dir_at) + ", not on " + where(top_at) +
                          " with " + instances_path +
                          " (a bind mount or another device); the image cache writes and deletes "
                          "only in its own directories");
  return dir;
}

Result<BaseFileLock> BaseFileLock::acquire(const BaseCache& cache, std::string_view base_file_name) {
  auto locks = open_cache_dir(cache.instances_path, kLockDirName, CreateDir::yes);
  if (!locks.ok()) return locks.error();
  return acquire_in(*locks, base_file_name, cache.lock_timeout_seconds);
}

Result<BaseFileLock> BaseFileLock::acquire_in(const CacheDir& locks, std::string_view base_file_name,
                                              int timeout_seconds) {
  auto l = lock_named(locks, base_file_name, LockMode::wait, timeout_seconds,
                      [](int fd) { return BaseFileLock(fd); });
  if (!l.ok()) return l.error();
  return std::move(**l);
}

Result<std::optional<BaseFileLock>> BaseFileLock::try_existing(const CacheDir& locks,
                                                               std::string_view base_file_name) {
  return lock_named(locks, base_file_name, LockMode::try_existing, 0,
                    [](int fd) { return BaseFileLock(fd); });
}

BaseFileLock::~BaseFileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

Status touch(const std::string& path) {
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0) return io_error("cannot touch " + path, errno);
  return {};
}

namespace {

// Copies [at, at + len) of in to the same offsets of out: copy_file_range,
// or a read/write loop where the kernel cannot (another filesystem, ...).
Status copy_range(int in, int out, std::uint64_t at, std::uint64_t len, const std::string& src,
                  const std::string& dst) {
  for (std::uint64_t done = 0; done < len;) {
    auto off_in = static_cast<loff_t>(at + done), off_out = off_in;
    const ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, len - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
      char buf[1 << 16];
      const ssize_t r =
          ::pread(in, buf, std::min<std::uint64_t>(sizeof buf, len - done), static_cast<off_t>(at + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return io_error("cannot read " + src, errno);
      if (r == 0) break;
      for (ssize_t w = 0; w < r;) {
        const ssize_t k =
            ::pwrite(out, buf + w, static_cast<std::size_t>(r - w), static_cast<off_t>(at + done) + w);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return io_error("cannot write " + dst, errno);
        w += k;
      }
      done += static_cast<std::uint64_t>(r);
      continue;
    }
    if (n < 0) return io_error("cannot copy " + src + " to " + dst, errno);
    if (n == 0)
      return make_error(Errc::io_error, "image " + src + " changed size while being copied; try again");
    done += static_cast<std::uint64_t>(n);
  }
  return {};
}

}  // namespace

Result<std::uint64_t> copy_file_synced(const std::string& src, const std::string& dst,
                                       const DiskAccess& access) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return io_error("cannot open image " + src, errno);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return io_error("cannot stat image " + src, errno);
  // Never readable by other users: a base holds a guest's data (docs/imagecache.md).
  Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) return io_error("cannot create " + dst, errno);
  if (Status s = access.apply(out.get(), false, dst); !s.ok()) return s.error();
  const auto total = static_cast<std::uint64_t>(st.st_size);
  // Only the data ranges are copied (SEEK_DATA / SEEK_HOLE), so a sparse
  // image stays sparse; the length is set at the end, holes and all.
  for (std::uint64_t at = 0; at < total;) {
    off_t data = ::lseek(in.get(), static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // no data after `at`: a hole to the end
    std::uint64_t end = total;
    if (data < 0 && errno == EINVAL) {
      data = static_cast<off_t>(at);  // no SEEK_DATA here: everything is data
    } else if (data < 0) {
      return io_error("cannot read the layout of " + src, errno);
    } else {
      const off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) return io_error("cannot read the layout of " + src, errno);
      end = std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), total);
    }
    const auto from = static_cast<std::uint64_t>(data);
    if (from >= total) break;
    if (Status s = copy_range(in.get(), out.get(), from, end - from, src, dst); !s.ok()) return s.error();
    at = end;
  }
  if (::ftruncate(out.get(), static_cast<off_t>(total)) != 0) return io_error("cannot size " + dst, errno);
  struct stat after {};
  if (::fstat(in.get(), &after) != 0) return io_error("cannot stat image " + src, errno);
  if (after.st_size != st.st_size)
    return make_error(Errc::io_error, "image " + src + " changed size while being copied; try again");
  if (::fsync(out.get()) != 0) return io_error("cannot fsync " + dst, errno);
  if (out.close_checked() != 0) return io_error("cannot close " + dst, errno);
  return total;
}

Result<EnsureOutcome> ensure_base_locked(const BaseCache& cache, std::string_view image_id,
                                         const std::string& source) {
  EnsureOutcome out;
  out.base_path = cache.base_path(image_id);
  struct stat st {};
  if (::stat(out.base_path.c_str(), &st) == 0) {
    out.bytes = static_cast<std::uint64_t>(st.st_size);
  } else {
    if (errno != ENOENT) return io_error("cannot stat base file " + out.base_path, errno);
    if (Status s = make_dirs(cache.base_dir, cache.access); !s.ok()) return s.error();
    const std::string tmp = out.base_path + std::string(kTempMarker) + random_suffix();
    auto copied = copy_file_synced(source, tmp, cache.access);
    if (!copied.ok()) {
      ::unlink(tmp.c_str());
      return copied.error();
    }
    if (::rename(tmp.c_str(), out.base_path.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return io_error("cannot rename " + tmp + " to " + out.base_path, err);
    }
    if (Status s = fsync_dir(cache.base_dir); !s.ok()) return s.error();
    out.fetched = true;
    out.bytes = copied.value();
  }
  if (Status s = touch(out.base_path); !s.ok()) return s.error();
  return out;
}

}  // namespace virtcap::imagecache
