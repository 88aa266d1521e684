#include "common/state_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/lock_file.h"

namespace virtcap {

Result<StateLock> StateLock::acquire(const std::string& state_path) {
  std::error_code ec;
  std::filesystem::create_directories(state_path, ec);
  if (ec) return make_error(Errc::io_error, "cannot create state_path " + state_path + ": " + ec.message());
  const std::string path = state_path + "/virtcap.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return make_error(Errc::io_error, "cannot open " + path + ": " + std::strerror(errno));
  if (const int err = lock_file(fd.get()); err != 0) {
    if (err != EWOULDBLOCK)
      return make_error(Errc::io_error, "cannot lock " + path + ": " + std::strerror(err));
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) pid = "unknown";
    return make_error(Errc::conflict, "another virtcap agent (pid " + pid +
                                          ") is already running with state_path " + state_path +
                                          " (it holds " + path +
                                          "); stop it first, or give this one another state_path");
  }
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    return make_error(Errc::io_error, "cannot write the pid into " + path + ": " + std::strerror(errno));
  return StateLock(std::move(fd), path);
}

}  // namespace virtcap
