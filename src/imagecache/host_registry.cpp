#include "imagecache/host_registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/json_text.h"
#include "common/time.h"
#include "imagecache/base_cache.h"

namespace virtcap::imagecache {

namespace fs = std::filesystem;

namespace {
bool valid_host_name(const std::string& h) {
  return !h.empty() && h.size() <= 255 && h[0] != '.' && std::all_of(h.begin(), h.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}
}  // namespace

Status register_host(const std::string& instances_path, const std::string& host) {
  if (!valid_host_name(host))
    return make_error(Errc::invalid_argument,
                      "host name '" + host + "' cannot be registered: use letters, digits, '.', '-', '_'");
  // Written only inside a real directory on the cache's mount (a symlinked
  // or mounted `hosts` is refused), and only relative to it.
  auto dir = open_cache_dir(instances_path, "hosts", CreateDir::yes);
  if (!dir.ok()) return dir.error();
  const std::string name = host + ".json", tmp = name + ".tmp-" + std::to_string(::getpid());
  const std::string path = dir->path + "/" + name;
  const auto now = now_seconds();
  const std::string body = dump_json(nlohmann::json{{"host", host}, {"updated_at", now}}) + "\n";
  UniqueFd fd(
      ::openat(dir->fd.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid())
    return make_error(Errc::io_error, "cannot write " + dir->path + "/" + tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd.get(), body.data(), body.size()) == static_cast<ssize_t>(body.size()) &&
            ::fsync(fd.get()) == 0;
  int err = errno;
  if (fd.close_checked() != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && ::renameat(dir->fd.get(), tmp.c_str(), dir->fd.get(), name.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlinkat(dir->fd.get(), tmp.c_str(), 0);
    return make_error(Errc::io_error, "cannot register host in " + path + ": " + std::strerror(err));
  }
  return {};
}

Result<std::vector<std::string>> registered_hosts(const std::string& instances_path) {
  std::vector<std::string> out;
  std::error_code ec;
  const fs::path dir = instances_path + "/hosts";
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > 5 && name.ends_with(".json")) out.push_back(name.substr(0, name.size() - 5));
  }
  if (ec) return make_error(Errc::io_error, "cannot list " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace virtcap::imagecache
