#include "imagecache/pass.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "common/audit.h"
#include "common/fd.h"
#include "common/time.h"
#include "common/utf8.h"
#include "imagecache/base_cache.h"
#include "imagecache/usage_scan.h"

namespace virtcap::imagecache {

namespace {

using Clock = std::chrono::steady_clock;

using Kind = BaseFileKind;
using State = BaseFileState;

bool is_hex40(std::string_view s) {
  if (s.size() != 40) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The random part of a fetch's temporary name (base_cache.cpp random_suffix).
bool is_temp_suffix(std::string_view s) {
  return s.size() == kTempSuffixLength && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z');
         });
}

// original: <sha1>; resized: <sha1>_<bytes>; temporary: <sha1>[_<bytes>].tmp-<10 of [a-z0-9]>,
// exactly the name a fetch writes. Anything else is unknown, and kept.
Kind kind_of(std::string_view name) {
  auto base_like = [](std::string_view n) {
    return is_hex40(n.substr(0, 40)) &&
           (n.size() == 40 || (n.size() > 41 && n[40] == '_' && all_digits(n.substr(41))));
  };
  if (auto t = name.find(kTempMarker); t != std::string_view::npos)
    return base_like(name.substr(0, t)) && is_temp_suffix(name.substr(t + kTempMarker.size()))
               ? Kind::temporary
               : Kind::unknown;
  if (!base_like(name)) return Kind::unknown;
  return name.size() == 40 ? Kind::original : Kind::resized;
}

// A regular file in the base directory, as listed.
struct Candidate {
  std::string name;
  FileId id;
  struct timespec mtime;
  std::uint64_t bytes;
  Kind kind;
};

bool same_mtime(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// Lists the base directory (regular files only; every error read). False,
// with a note, when it could not be listed completely.
bool list_bases(int base_fd, const std::string& base_dir, std::vector<Candidate>& out,
                ImageCacheReport& report) {
  bool ok = true;
  const int err = list_dir(base_fd, [&](const DirEntry& e) {
    const std::string name(e.name);
    struct stat st {};
    if (::fstatat(base_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return;  // removed since the listing
      report.notes.push_back("cannot stat " + base_dir + "/" + name + ": " + std::strerror(errno));
      ok = false;
      return;
    }
    if (!S_ISREG(st.st_mode)) return;  // symlinks, directories: not ours to manage
    out.push_back(
        {name, {st.st_dev, st.st_ino}, st.st_mtim, static_cast<std::uint64_t>(st.st_size), kind_of(name)});
  });
  if (err != 0) {
    report.notes.push_back("cannot list " + base_dir + ": " + std::strerror(err));
    ok = false;
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return ok;
}

std::vector<BaseEntry> entries_of(const std::vector<Candidate>& c) {
  std::vector<BaseEntry> out;
  out.reserve(c.size());
  for (const auto& x : c) out.push_back({x.name, x.id});
  return out;
}

ScanOptions scan_options(const PassOptions& opts) {
  return {
      opts.instances_path, {opts.subdirectory_name, std::string(kLockDirName), "hosts"}, opts.progress_every};
}

std::string use_reason(const BaseUse& u) {
  if (u.by_name_only)
    return "a backing path that does not exist on this host ends in its name (another host's mount of the "
           "same storage?): " +
           u.by;
  return "used by " + u.by;
}

// Decides each file's state; returns the names to remove.
std::vector<std::size_t> classify(const PassOptions& opts, const std::vector<Candidate>& listing,
                                  const UsageScan& scan, const std::set<std::string>& store_originals,
                                  const std::string& base_dir, ImageCacheReport& report) {
  const std::int64_t now = now_seconds();
  std::vector<std::size_t> to_remove;
  for (std::size_t i = 0; i < listing.size(); ++i) {
    const Candidate& c = listing[i];
    BaseFileReport f;
    f.name = c.name;
    f.kind = c.kind;
    f.bytes = c.bytes;
    f.age_seconds = now - c.mtime.tv_sec;
    const bool in_store =
        store_originals.count(c.name.substr(0, std::min<std::size_t>(40, c.name.size()))) > 0;
    if (c.kind == Kind::unknown) {
      f.state = State::unknown;
      f.reason = "not a file name this driver makes; kept";
    } else if (c.kind != Kind::temporary && (scan.use[i].used || in_store)) {
      f.state = State::in_use;
      f.reason = scan.use[i].used ? use_reason(scan.use[i]) : "image of a live instance in the store";
      if (!opts.dry_run) {
        if (Status st = touch(base_dir + "/" + c.name); !st.ok()) report.notes.push_back(st.error().message);
      }
    } else {
      const bool temp = c.kind == Kind::temporary;
      f.threshold_seconds = temp                      ? opts.temporary_min_age_seconds
                            : c.kind == Kind::resized ? opts.resized_min_age_seconds
                                                      : opts.original_min_age_seconds;
      if (f.age_seconds < f.threshold_seconds) {
        f.state = State::unused_young;
        f.reason = temp ? "temporary file of a fetch, possibly in progress"
                        : "unused, but younger than remove_unused_" + std::string(to_string(f.kind)) +
                              "_minimum_age_seconds";
      } else {
        f.state = State::removable;
        f.reason = temp ? "leftover temporary file of an interrupted fetch" : "unused and old enough";
        to_remove.push_back(i);
      }
    }
    report.files.push_back(std::move(f));
  }
  return to_remove;
}

void keep_all(ImageCacheReport& report, std::vector<std::size_t>& to_remove, const std::string& why) {
  for (auto i : to_remove) report.files[i].reason += "; " + why;
  to_remove.clear();
}

// The agent's stop ends the pass at this step: nothing (more) is removed.
bool stop_here(const PassOptions& opts, ImageCacheReport& report, std::vector<std::size_t>& to_remove,
               const std::string& when) {
  if (!opts.stop.stop_requested()) return false;
  report.complete = false;
  report.stopped = true;
  report.notes.push_back("stopped " + when + " (the agent is stopping); nothing removed");
  keep_all(report, to_remove, "not removed: the agent is stopping");
  return true;
}

void take_scan(ImageCacheReport& report, UsageScan& scan) {
  for (auto& u : scan.unreadable) report.unreadable_disks.push_back(std::move(u));
  for (auto& m : scan.missing) report.missing_backings.push_back(std::move(m));
  report.name_matches += scan.name_matches;
  scan.unreadable.clear();
  scan.missing.clear();
}

// Removes the candidates, under their locks, after a second look.
void remove_locked(const PassOptions& opts, const BaseCache& cache, int base_fd,
                   const std::vector<Candidate>& listing, std::vector<std::size_t>& to_remove,
                   ImageCacheReport& report) {
  if (opts.after_first_look) opts.after_first_look();
  auto lock_dir = open_cache_dir(cache.instances_path, kLockDirName, CreateDir::yes);
  if (!lock_dir.ok()) {
    report.complete = false;
    report.notes.push_back(lock_dir.error().message);
    return keep_all(report, to_remove, "not removed: " + lock_dir.error().message);
  }
  std::set<std::string> owners;
  for (auto i : to_remove) owners.insert(std::string(BaseCache::lock_owner(listing[i].name)));
  std::vector<BaseFileLock> locks;
  for (const auto& o : owners) {  // sorted: a spawn holds at most one
    auto l = BaseFileLock::acquire_in(*lock_dir, o, cache.lock_timeout_seconds);
    if (!l.ok()) {
      report.complete = false;
      report.notes.push_back(l.error().message);
      return keep_all(report, to_remove, "not removed: " + l.error().message);
    }
    locks.push_back(std::move(l.value()));
  }
  // With the locks held no spawn is between fetching one of these bases and
  // finishing its disk, so this second look is authoritative for them.
  UsageScan again = scan_usage(scan_options(opts), entries_of(listing));
  if (!again.unreadable.empty()) {
    report.complete = false;
    report.notes.push_back("second look: " + again.unreadable.front().path + ": " +
                           again.unreadable.front().error);
    take_scan(report, again);
    return keep_all(report, to_remove, "not removed: a disk could not be read on the second look");
  }
  if (stop_here(opts, report, to_remove, "after the second look")) return;
  for (auto i : to_remove) {
    const Candidate& c = listing[i];
    BaseFileReport& f = report.files[i];
    if (c.kind != Kind::temporary && again.use[i].used) {
      f.state = State::in_use;
      f.reason = "a disk created during the pass uses it (" + use_reason(again.use[i]) + ")";
      continue;
    }
    struct stat st {};
    if (::fstatat(base_fd, c.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      f.state = State::kept;
      f.reason =
          err == ENOENT ? "vanished before removal" : std::string("cannot stat: ") + std::strerror(err);
      if (err != ENOENT) report.complete = false;
      continue;
    }
    if (FileId{st.st_dev, st.st_ino} != c.id || !same_mtime(st.st_mtim, c.mtime)) {
      f.state = c.kind == Kind::temporary ? State::kept : State::in_use;
      f.reason = "changed during the pass (replaced, or touched by a spawn)";
      continue;
    }
    spdlog::info("image cache: removing {}/{} ({} bytes, {}; age {} s)", report.base_dir, utf8_safe(c.name),
                 c.bytes, f.reason, f.age_seconds);
    audit::Scope audit("image_cache_remove");
    audit.field("file", report.base_dir + "/" + c.name);
    audit.field("bytes", c.bytes);
    if (::unlinkat(base_fd, c.name.c_str(), 0) != 0) {
      report.complete = false;
      f.state = State::kept;
      f.reason = std::string("removal failed: ") + std::strerror(errno);
      spdlog::warn("image cache: could not remove {}/{}: {}", report.base_dir, utf8_safe(c.name), f.reason);
      audit.failed(f.reason);
      continue;
    }
    audit.ok();
    f.state = State::removed;
    ++report.files_removed;
    report.bytes_freed += c.bytes;
  }
}

// Lock files whose base file (and its temporaries) are gone: each removed
// under its own lock, taken only if free. Only in a lock directory that
// open_cache_dir accepts, only relative to it, and only names the cache
// makes (<sha1>[_<bytes>].lock).
void cleanup_locks(const BaseCache& cache, int base_fd, ImageCacheReport& report) {
  auto locks = open_cache_dir(cache.instances_path, kLockDirName, CreateDir::no);
  if (!locks.ok()) {
    if (locks.error().code == Errc::not_found) return;  // none yet
    // Housekeeping only, after the removals: a note, not an incomplete pass.
    report.notes.push_back("lock files not cleaned up: " + locks.error().message);
    return;
  }
  std::vector<std::string> names;
  const int err = list_dir(locks->fd.get(), [&](const DirEntry& e) {
    constexpr std::string_view kSuffix = ".lock";
    if (e.name.size() <= kSuffix.size() || e.name.substr(e.name.size() - kSuffix.size()) != kSuffix) return;
    const auto stem = e.name.substr(0, e.name.size() - kSuffix.size());
    if (const Kind k = kind_of(stem); k == Kind::original || k == Kind::resized) names.emplace_back(stem);
  });
  if (err != 0) report.notes.push_back("cannot list " + locks->path + ": " + std::strerror(err));
  std::set<std::string> owners;
  const int base_err = list_dir(
      base_fd, [&](const DirEntry& e) { owners.insert(std::string(BaseCache::lock_owner(e.name))); });
  ::lseek(base_fd, 0, SEEK_SET);
  if (base_err != 0) {
    report.notes.push_back("lock files not cleaned up: cannot list " + cache.base_dir + ": " +
                           std::strerror(base_err));
    return;
  }
  for (const auto& n : names) {
    if (owners.count(n)) continue;
    auto l = BaseFileLock::try_existing(*locks, n);
    if (!l.ok() || !l->has_value()) continue;  // busy: a fetch is starting; keep
    struct stat st {};
    if (::fstatat(base_fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) continue;
    if (::unlinkat(locks->fd.get(), (n + ".lock").c_str(), 0) != 0 && errno != ENOENT)
      report.notes.push_back("cannot remove lock file " + locks->path + "/" + n +
                             ".lock: " + std::strerror(errno));
  }
}

}  // namespace

bool is_reserved_dir(const std::string& name, const PassOptions& opts) {
  return name == opts.subdirectory_name || name == kLockDirName || name == "hosts";
}

ImageCacheReport run_pass(const PassOptions& opts, const std::vector<InstanceRecord>& live_instances) {
  const auto t0 = Clock::now();
  ImageCacheReport report;
  report.dry_run = opts.dry_run;
  report.removal_enabled = opts.remove_unused;
  report.instances_considered = live_instances.size();
  BaseCache cache(opts.instances_path, opts.subdirectory_name);
  cache.lock_timeout_seconds = opts.lock_timeout_seconds;
  report.base_dir = cache.base_dir;
  auto finish = [&] {
    report.complete = report.complete && report.unreadable_disks.empty();
    report.duration_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return report;
  };

  // The base directory first: files that appear after this are not
  // candidates at all.
  auto base = open_cache_dir(cache.instances_path, opts.subdirectory_name, CreateDir::no);
  if (!base.ok()) {
    if (base.error().code == Errc::not_found) {
      report.notes.push_back("no base directory " + cache.base_dir + ": nothing to manage");
      return finish();
    }
    report.complete = false;
    report.notes.push_back(base.error().message + "; nothing removed");
    return finish();
  }
  const UniqueFd& base_fd = base->fd;
  std::vector<Candidate> listing;
  const bool listed = list_bases(base_fd.get(), cache.base_dir, listing, report);
  ::lseek(base_fd.get(), 0, SEEK_SET);

  if (std::vector<std::size_t> none; stop_here(opts, report, none, "before reading the disks"))
    return finish();

  // (a) the disks on the storage, by identity; (b) the live instances.
  UsageScan scan = scan_usage(scan_options(opts), entries_of(listing));
  report.instance_dirs = scan.instance_dirs;
  report.disks_read = scan.disks_read;
  std::set<std::string> store_originals;
  for (const auto& inst : live_instances)
    if (!inst.image_id.empty()) store_originals.insert(BaseCache::base_name(inst.image_id));
  auto to_remove = classify(opts, listing, scan, store_originals, cache.base_dir, report);
  const bool readable = scan.unreadable.empty();
  take_scan(report, scan);

  if (!listed) {
    report.complete = false;
    keep_all(report, to_remove, "not removed: the base directory could not be listed completely");
  } else if (!readable) {
    report.complete = false;
    const auto& first = report.unreadable_disks.front();
    keep_all(report, to_remove,
             "not removed: " + std::to_string(report.unreadable_disks.size()) +
                 " disk(s) or directories could not be read, so nothing is provably unused");
    report.notes.push_back("removed nothing: cannot read " + first.path + " (" + first.error + ")");
  } else if (stop_here(opts, report, to_remove, "before taking the locks")) {
    // everything kept, as stop_here noted
  } else if (opts.dry_run) {
    keep_all(report, to_remove, "dry run: not removed");
  } else if (!opts.remove_unused) {
    keep_all(report, to_remove, "remove_unused_base_images = false: reported only");
  }
  if (!to_remove.empty()) remove_locked(opts, cache, base_fd.get(), listing, to_remove, report);
  if (!opts.dry_run && opts.remove_unused && report.complete && report.unreadable_disks.empty())
    cleanup_locks(cache, base_fd.get(), report);
  return finish();
}

nlohmann::json to_json(const ImageCacheReport& r) {
  nlohmann::json files = nlohmann::json::array();
  std::map<std::string, std::size_t> counts;
  for (const auto& f : r.files) {
    ++counts[std::string(to_string(f.state))];
    files.push_back({{"name", utf8_safe(f.name)},
                     {"kind", std::string(to_string(f.kind))},
                     {"state", std::string(to_string(f.state))},
                     {"reason", utf8_safe(f.reason)},
                     {"bytes", f.bytes},
                     {"age_seconds", f.age_seconds},
                     {"threshold_seconds", f.threshold_seconds}});
  }
  nlohmann::json unreadable = nlohmann::json::array();
  for (const auto& u : r.unreadable_disks)
    unreadable.push_back({{"path", utf8_safe(u.path)}, {"error", utf8_safe(u.error)}});
  nlohmann::json missing = nlohmann::json::array();
  for (const auto& m : r.missing_backings)
    missing.push_back({{"disk", utf8_safe(m.disk)}, {"backing", utf8_safe(m.backing)}});
  nlohmann::json notes = nlohmann::json::array();
  for (const auto& n : r.notes) notes.push_back(utf8_safe(n));
  nlohmann::json c = nlohmann::json::object();
  for (const char* s : {"in_use", "unused_young", "removable", "removed", "kept", "unknown"})
    c[s] = counts[s];
  return {{"complete", r.complete},
          {"dry_run", r.dry_run},
          {"removal_enabled", r.removal_enabled},
          {"base_dir", utf8_safe(r.base_dir)},
          {"instances_considered", r.instances_considered},
          {"instance_dirs", r.instance_dirs},
          {"disks_read", r.disks_read},
          {"unreadable_disks", unreadable},
          {"missing_backings", missing},
          {"name_matches", r.name_matches},
          {"counts", c},
          {"files_removed", r.files_removed},
          {"bytes_freed", r.bytes_freed},
          {"duration_seconds", r.duration_seconds},
          {"files", files},
          {"notes", notes}};
}

std::string to_table(const ImageCacheReport& r) {
  std::ostringstream os;
  os << "base directory: " << r.base_dir << (r.dry_run ? "   (dry run)" : "") << "\n\n";
  std::size_t w = 4;
  for (const auto& f : r.files) w = std::max(w, f.name.size());
  auto pad = [](std::string s, std::size_t n) {
    s.resize(std::max(n, s.size()), ' ');
    return s;
  };
  os << pad("FILE", w) << "  " << pad("KIND", 9) << "  " << pad("STATE", 12) << "  " << pad("BYTES", 12)
     << "  " << pad("AGE(s)", 9) << "  REASON\n";
  for (const auto& f : r.files)
    os << pad(f.name, w) << "  " << pad(std::string(to_string(f.kind)), 9) << "  "
       << pad(std::string(to_string(f.state)), 12) << "  " << pad(std::to_string(f.bytes), 12) << "  "
       << pad(std::to_string(f.age_seconds), 9) << "  " << f.reason << "\n";
  if (r.files.empty()) os << "(no base files)\n";
  const auto j = to_json(r);
  os << "\n";
  for (const auto& [k, v] : j.at("counts").items()) os << k << "=" << v.get<std::size_t>() << " ";
  os << "\nremoved " << r.files_removed << " file(s), " << r.bytes_freed << " bytes freed; read "
     << r.disks_read << " disk(s) in " << r.instance_dirs << " instance dir(s) in " << r.duration_seconds
     << " s; " << r.instances_considered << " live instance(s) from the store\n";
  for (const auto& u : r.unreadable_disks) os << "UNREADABLE " << u.path << ": " << u.error << "\n";
  for (const auto& m : r.missing_backings)
    os << "missing backing file " << m.backing << " (of " << m.disk << "): names no base file\n";
  if (r.name_matches)
    os << r.name_matches << " missing backing path(s) kept a base file by its name (another host's mount?)\n";
  for (const auto& n : r.notes) os << "note: " << n << "\n";
  os << (r.complete ? "pass complete\n"
                    : "PASS INCOMPLETE: nothing was removed that could not be proven unused\n");
  return os.str();
}

}  // namespace virtcap::imagecache
