// One RAII file descriptor, and an error-checked directory listing on it.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace virtcap {

// Owns one fd; closes it on destruction (where close()'s error cannot be
// reported: files that were written are fsynced first, or closed with
// close_checked()).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const = delete;  // say valid(): an fd of 0 is valid
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // Closes now and returns close's result (on some filesystems the first
  // report of a failed write-back), for files whose data matters.
  int close_checked() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_ = -1;
};

// Reads up to `want` bytes at `offset`, retrying short reads and EINTR
// until the end of the file, so a short count really means the file ended.
// Returns the count, or -errno.
inline long long pread_full(int fd, std::uint8_t* buf, std::size_t want, std::uint64_t offset) {
  std::size_t got = 0;
  while (got < want) {
    const ssize_t n = ::pread(fd, buf + got, want - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -static_cast<long long>(errno);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return static_cast<long long>(got);
}

// One entry of a directory: its name, d_type (DT_REG, DT_DIR, DT_LNK,
// DT_UNKNOWN, ...) and d_ino. "." and ".." are never reported.
struct DirEntry {
  std::string_view name;
  unsigned char type;
  ino_t ino;
};

// Lists the directory open at `dir_fd` (which must be at offset 0) with
// getdents64, calling f(const DirEntry&) per entry. Returns 0 at the end of
// the directory, or the errno of the failing getdents64 call (EIO, ESTALE,
// ...): a failure part-way is never mistaken for the end. f must not keep
// the name past its call.
template <class F>
int list_dir(int dir_fd, F&& f) {
  alignas(8) char buf[32 * 1024];
  for (;;) {
    const ssize_t n = ::getdents64(dir_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    for (ssize_t pos = 0; pos < n;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf + pos);
      pos += d->d_reclen;
      const std::string_view name(d->d_name);
      if (name == "." || name == "..") continue;
      f(DirEntry{name, d->d_type, static_cast<ino_t>(d->d_ino)});
    }
  }
}

}  // namespace virtcap
