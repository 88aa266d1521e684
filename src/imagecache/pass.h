// The image-cache pass: which base images are in use, which are old enough
// to go, and their removal - fail-safe.
//
// In use = the union of two sources, neither trusted alone:
//   (a) every disk under instances_path, whichever host it belongs to: a base
//       is in use when a disk, or any file of its chain, IS that base file by
//       (st_dev, st_ino) - see usage_scan.h for the identity rule;
//   (b) the image ids of the live instances the manager hands down, each
//       mapped to its sha1-named base file and its resized variants.
// If anything cannot be listed, stat()ed, opened, read or followed, the pass
// removes nothing and names what and why. Removal takes the per-base-file
// locks the spawn path takes (a temporary's lock is its base's), reads every
// instance directory again, and keeps a base file that a disk now uses or
// that changed (other inode, or a spawn touched its mtime). Each removal is
// logged before the unlink.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <stop_token>
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
  // How long to wait for each base file's lock before giving up (and
  // removing nothing).
  int lock_timeout_seconds = 600;
  // Log progress every this many disks (0: never).
  std::size_t progress_every = 50000;
  // Test seam, empty outside tests: when something is to be removed, called
  // once after the first look (files classified) and before the candidates'
  // locks are taken, so a test can play a racing spawn deterministically (add
  // a disk, replace or touch a base) in the window the second look and the
  // re-check before each unlink guard.
  std::function<void()> after_first_look;
  // The agent's stop: checked between the pass's steps (before the disks are
  // read, and before anything is removed). Once requested, nothing more is
  // removed and the report says `stopped` (and not complete).
  std::stop_token stop;
};

// Directory names under instances_path that are not instance directories.
bool is_reserved_dir(const std::string& name, const PassOptions& opts);

ImageCacheReport run_pass(const PassOptions& opts, const std::vector<InstanceRecord>& live_instances);

// Stable JSON (documented in docs/imagecache.md) and a human table. Every
// string is valid UTF-8 (file names that are not are escaped with U+FFFD), so
// dumping it never throws.
nlohmann::json to_json(const ImageCacheReport& r);
std::string to_table(const ImageCacheReport& r);

}  // namespace virtcap::imagecache
