#include "common/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/fd.h"

namespace virtcap {

int lock_file(int fd) {
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

Status make_dirs(const std::string& dir, mode_t mode, std::string_view what, const OnDirCreated& on_created) {
  const auto failed = [what](const std::string& path, const std::string& why) {
    return make_error(Errc::io_error, "cannot create " + std::string(what) + " " + path + ": " + why);
  };
  std::string path;
  for (const auto& part : std::filesystem::path(dir)) {
    path = path.empty() ? part.string() : (path == "/" ? "/" : path + "/") + part.string();
    if (path == "/" || part == "." || part.empty()) continue;
    if (::mkdir(path.c_str(), mode) == 0) {
      if (!on_created) continue;
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd.valid())
        return make_error(Errc::io_error,
                          "cannot open " + std::string(what) + " " + path + ": " + std::strerror(errno));
      if (Status st = on_created(fd.get(), path); !st.ok()) return st;
    } else if (errno != EEXIST) {
      return failed(path, std::strerror(errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return failed(dir, std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return failed(dir, "a file is in the way");
  return {};
}

}  // namespace virtcap
