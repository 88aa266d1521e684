// The local image repository: a directory of <image-id>.raw and
// <image-id>.qcow2 files. An image's format is taken from its own header,
// never from its name alone.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "virtcap/capabilities.h"
#include "virtcap/driver.h"
#include "virtcap/error.h"

namespace virtcap::libvirt {

// ^[A-Za-z0-9._-]{1,128}$, and no "..": checked before any path is built.
using virtcap::valid_image_id;

struct ImageInfo {
  std::string id;
  std::string path;
  ImageFormat format = ImageFormat::raw;
  std::uint64_t virtual_size = 0;
  std::uint64_t file_size = 0;
};

class ImageRepository {
 public:
  explicit ImageRepository(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  // invalid_argument for a bad id or a corrupt/mislabelled image; not_found
  // when there is no such image; conflict when both formats exist.
  Result<ImageInfo> find(std::string_view id) const;
  // Every regular file (or link to one) in the directory, sorted by name:
  // its format by magic and, for an <id>.raw / <id>.qcow2 name, what find()
  // says about it. not_found when the directory does not exist; io_error
  // when it cannot be listed completely.
  Result<std::vector<RepoImage>> list() const;

 private:
  std::string dir_;
};

}  // namespace virtcap::libvirt
