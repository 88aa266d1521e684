// The image-cache pass: which base images are in use, which are old enough
// to go, and their removal - fail-safe.
//
// In use = the union of two sources, neither trusted alone:
//   (a) every qcow2 file in every instance directory under instances_path,
//       whichever host it belongs to and whether that host is registered or up
//       (each backing chain is followed; every base file in it counts);
//   (b) the image ids of the live instances the manager hands down, each
//       mapped to its sha1-named base file and its resized variants.
// If any instance disk cannot be read, the pass removes nothing. Removal takes
// the per-base-file locks the spawn path takes, then reads every instance
// directory again and keeps a base file that a disk now uses or whose mtime
// changed (a spawn touched it).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "virtcap/driver.h"
#include "virtcap/instance.h"

namespace virtcap::imagecache {

struct PassOptions {
  std::string instances_path;
  std::string subdirectory_name = "_base";
  bool remove_unused = true;
  std::int64_t original_min_age_seconds = 86400;
  std::int64_t resized_min_age_seconds = 3600;
  // Leftover temporaries from an interrupted fetch are removed when older
  // than this (a live fetch keeps writing, so its mtime stays fresh; it also
  // holds the base file's lock, which the removal takes).
  std::int64_t temporary_min_age_seconds = 3600;
  bool dry_run = false;
  // Log progress every this many disks (0: never).
  std::size_t progress_every = 50000;
};

// Directory names under instances_path that are not instance directories.
bool is_reserved_dir(const std::string& name, const PassOptions& opts);

ImageCacheReport run_pass(const PassOptions& opts, const std::vector<InstanceRecord>& live_instances);

// Stable JSON (documented in docs/imagecache.md) and a human table.
nlohmann::json to_json(const ImageCacheReport& r);
std::string to_table(const ImageCacheReport& r);

}  // namespace virtcap::imagecache
