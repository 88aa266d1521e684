// A base directory and instance directories on real files, for image-cache
// pass tests: raw bases and qcow2 overlays made by qemu-img, real mtimes.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/time.h"
#include "imagecache/pass.h"
#include "support/test_support.h"

namespace virtcap::testing {

inline constexpr std::int64_t kHour = 3600, kDay = 86400;

inline std::int64_t now() { return now_seconds(); }

struct Fixture {
  TempDir dir{"virtcap-pass"};
  imagecache::PassOptions opts;
  Fixture() {
    opts.instances_path = dir.sub("instances");
    opts.progress_every = 0;
    fs::create_directories(base_dir());
  }
  std::string base_dir() const { return opts.instances_path + "/_base"; }
  std::string base(const std::string& name) const { return base_dir() + "/" + name; }
  // A raw base file, aged.
  std::string make_base(const std::string& name, std::int64_t age) const {
    make_raw_image(base(name), "64K");
    set_mtime(base(name), now() - age);
    return base(name);
  }
  // An instance disk backed by `backing` (absolute, or as given).
  std::string make_disk(const std::string& uuid, const std::string& disk, const std::string& backing,
                        const std::string& fmt = "raw", const std::string& overlay_fmt = "qcow2") const {
    fs::create_directories(opts.instances_path + "/" + uuid);
    const std::string path = opts.instances_path + "/" + uuid + "/" + disk;
    // -u: do not open the backing (it may be relative to the disk's directory).
    must_run({"qemu-img", "create", "-q", "-f", overlay_fmt, "-u", "-F", fmt, "-b", backing, path, "64K"});
    return path;
  }
  std::vector<std::string> remaining() const { return tree(base_dir()); }
  static const BaseFileReport& file(const ImageCacheReport& r, const std::string& name) {
    for (const auto& f : r.files)
      if (f.name == name) return f;
    throw std::runtime_error("no file " + name);
  }
};

// The oracle: every file QEMU opens for `disk`, per `qemu-img info -U
// --backing-chain --output=json`: each image of the chain, each qcow2
// external data file and each VMDK extent (relative names resolved against
// the directory of the image naming them, as QEMU does). Empty when qemu-img
// cannot open the disk at all (QEMU then opens nothing for it).
inline std::vector<std::string> qemu_opened_files(const std::string& disk) {
  std::vector<std::string> files;
  auto r = proc::run({"qemu-img", "info", "-U", "--backing-chain", "--output=json", disk});
  if (!r.ok() || r->exit_code != 0) return files;
  const auto j = nlohmann::json::parse(r->out, nullptr, false);
  if (!j.is_array()) return files;
  auto resolve = [](const std::string& name, const std::string& image) {
    if (name.empty() || name.front() == '/') return name;
    return fs::path(image).parent_path().string() + "/" + name;
  };
  for (const auto& img : j) {
    const std::string image = img.value("filename", "");
    files.push_back(image);
    const auto data = img.contains("format-specific")
                          ? img["format-specific"].value("data", nlohmann::json::object())
                          : nlohmann::json::object();
    if (data.contains("data-file")) files.push_back(resolve(data.value("data-file", ""), image));
    if (data.contains("extents"))
      for (const auto& e : data["extents"]) files.push_back(resolve(e.value("filename", ""), image));
  }
  return files;
}

// True when QEMU opens `file` (by identity) for `disk`.
inline bool qemu_opens(const std::string& disk, const std::string& file) {
  struct stat want {};
  if (::stat(file.c_str(), &want) != 0) return false;
  for (const auto& f : qemu_opened_files(disk)) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino) return true;
  }
  return false;
}

}  // namespace virtcap::testing
