#include "imagecache/pass.h"

#include <dirent.h>
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

#include "imagecache/base_cache.h"
#include "imagecache/qcow2.h"

namespace virtcap::imagecache {

namespace {

using Clock = std::chrono::steady_clock;

bool is_hex40(std::string_view s) {
  if (s.size() != 40) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// original: <sha1>; resized: <sha1>_<bytes>; temporary: <sha1>[_<bytes>].tmp-<x>
std::string kind_of(std::string_view name) {
  if (auto t = name.find(kTempMarker); t != std::string_view::npos) {
    auto stem = name.substr(0, t);
    if (is_hex40(stem.substr(0, 40)) && (stem.size() == 40 || (stem[40] == '_' && all_digits(stem.substr(41)))))
      return "temporary";
    return "unknown";
  }
  if (is_hex40(name)) return "original";
  if (name.size() > 41 && is_hex40(name.substr(0, 40)) && name[40] == '_' && all_digits(name.substr(41)))
    return "resized";
  return "unknown";
}

std::int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Scanner {
  const PassOptions& opts;
  std::string base_dir;
  ImageCacheReport& report;
  std::set<std::string> in_use;                  // base file names
  std::map<std::string, std::vector<std::string>> below_base;  // memo: base name -> base names under it

  void mark_chain_from_base(const std::string& base_name) {
    if (in_use.count(base_name) && below_base.count(base_name)) return;
    in_use.insert(base_name);
    auto memo = below_base.find(base_name);
    if (memo == below_base.end()) {
      std::vector<std::string> under;
      const std::string path = base_dir + "/" + base_name;
      auto chain = backing_chain(path);
      if (!chain) {
        // A base file we cannot follow: we cannot prove what it depends on.
        if (chain.error().code != Qcow2Errc::io_error || chain.error().sys_errno != ENOENT)
          report.unreadable_disks.push_back({path, chain.error().describe()});
      } else {
        for (std::size_t i = 1; i < chain->size(); ++i) {
          const auto& link = (*chain)[i];
          if (link.is_file && parent_is_base(link.path)) under.push_back(file_name(link.path));
        }
      }
      memo = below_base.emplace(base_name, std::move(under)).first;
    }
    for (const auto& n : memo->second) in_use.insert(n);
  }

  bool parent_is_base(const std::string& path) const {
    const auto slash = path.rfind('/');
    return slash != std::string::npos && path.compare(0, slash, base_dir) == 0 && slash == base_dir.size();
  }
  static std::string file_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

  // One disk (an open fd). Errors other than "not qcow2" make it unreadable.
  void read_disk(int fd, const std::string& path) {
    ++report.disks_read;
    auto h = read_header_fd(fd, path);
    if (!h) {
      if (h.error().code == Qcow2Errc::not_qcow2) return;  // raw disk, config drive, console log...
      report.unreadable_disks.push_back({path, h.error().describe()});
      return;
    }
    if (!h->has_backing() || !h->backing_is_path) return;
    const std::string backing = resolve_backing(path, h->backing_file);
    if (parent_is_base(backing)) {
      mark_chain_from_base(file_name(backing));
      return;
    }
    // Overlay on something outside the base directory: follow the whole chain.
    auto chain = backing_chain(backing);
    if (!chain) {
      report.unreadable_disks.push_back({path, "its backing chain: " + chain.error().describe()});
      return;
    }
    for (const auto& link : *chain)
      if (link.is_file && parent_is_base(link.path)) mark_chain_from_base(file_name(link.path));
  }

  void scan_instance_dir(int parent_fd, const std::string& name) {
    const std::string dir_path = opts.instances_path + "/" + name;
    int dfd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      if (errno == ENOENT) return;  // the instance was deleted during the scan
      report.unreadable_disks.push_back({dir_path, std::string("cannot open instance directory: ") + std::strerror(errno)});
      return;
    }
    DIR* d = ::fdopendir(dfd);
    if (!d) {
      ::close(dfd);
      report.unreadable_disks.push_back({dir_path, std::string("cannot list: ") + std::strerror(errno)});
      return;
    }
    ++report.instance_dirs;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      if (e->d_type != DT_REG && e->d_type != DT_LNK && e->d_type != DT_UNKNOWN) continue;
      // A disk being created (spawn writes <name>.tmp-<x>, then renames it)
      // is skipped: its spawn holds its base file's lock, which removal takes
      // before it looks again.
      if (std::strstr(e->d_name, kTempMarker.data()) != nullptr) continue;
      const std::string path = dir_path + "/" + e->d_name;
      int fd = ::openat(dfd, e->d_name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) {
        if (errno != ENOENT)  // a disk vanishing during the scan is not an error
          report.unreadable_disks.push_back({path, std::string("cannot open: ") + std::strerror(errno)});
        continue;
      }
      if (e->d_type != DT_REG) {
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
          ::close(fd);
          continue;
        }
      }
      read_disk(fd, path);
      ::close(fd);
      if (opts.progress_every && report.disks_read % opts.progress_every == 0)
        spdlog::info("image cache: {} disks read in {} instance directories so far", report.disks_read,
                     report.instance_dirs);
    }
    ::closedir(d);
  }

  // Reads every instance directory.
  bool scan_instances() {
    int fd = ::open(opts.instances_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return true;
      report.unreadable_disks.push_back(
          {opts.instances_path, std::string("cannot open instances path: ") + std::strerror(errno)});
      return false;
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return false;
    }
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name[0] == '.' || is_reserved_dir(name, opts)) continue;
      if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN && e->d_type != DT_LNK) continue;
      scan_instance_dir(::dirfd(d), name);
    }
    ::closedir(d);
    return true;
  }
};

BaseFileReport* find_file(ImageCacheReport& r, const std::string& name) {
  for (auto& f : r.files)
    if (f.name == name) return &f;
  return nullptr;
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
  report.base_dir = cache.base_dir;
  Scanner scan{opts, cache.base_dir, report, {}, {}};
  auto finish = [&] {
    report.complete = report.unreadable_disks.empty() && report.complete;
    report.duration_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return report;
  };

  // List the base directory first: files that appear after this are not
  // candidates at all.
  struct Candidate {
    std::string name;
    struct timespec mtime;
    std::uint64_t bytes;
  };
  std::vector<Candidate> listing;
  {
    DIR* d = ::opendir(cache.base_dir.c_str());
    if (!d) {
      if (errno == ENOENT) {
        report.notes.push_back("no base directory " + cache.base_dir + ": nothing to manage");
        return finish();
      }
      report.complete = false;
      report.notes.push_back("cannot list " + cache.base_dir + ": " + std::strerror(errno) + "; nothing removed");
      return finish();
    }
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0'))) continue;
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
      listing.push_back({e->d_name, st.st_mtim, static_cast<std::uint64_t>(st.st_size)});
    }
    ::closedir(d);
    std::sort(listing.begin(), listing.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  }

  // (a) the disks on the storage, (b) the live instances from the store.
  scan.scan_instances();
  std::set<std::string> store_originals;
  for (const auto& inst : live_instances)
    if (!inst.image_id.empty()) store_originals.insert(BaseCache::base_name(inst.image_id));

  const std::int64_t now = now_unix();
  std::vector<std::string> to_remove;
  for (const auto& c : listing) {
    BaseFileReport f;
    f.name = c.name;
    f.kind = kind_of(c.name);
    f.bytes = c.bytes;
    f.age_seconds = now - c.mtime.tv_sec;
    const std::string sha = c.name.substr(0, std::min<std::size_t>(40, c.name.size()));
    if (f.kind == "unknown") {
      f.state = "unknown";
      f.reason = "not a file name this driver makes; kept";
    } else if (f.kind == "temporary") {
      f.threshold_seconds = opts.temporary_min_age_seconds;
      if (f.age_seconds < f.threshold_seconds) {
        f.state = "unused_young";
        f.reason = "temporary file of a fetch, possibly in progress";
      } else {
        f.state = "removable";
        f.reason = "leftover temporary file of an interrupted fetch";
        to_remove.push_back(c.name);
      }
    } else if (scan.in_use.count(c.name) || store_originals.count(sha)) {
      f.state = "in_use";
      f.reason = scan.in_use.count(c.name) ? "backs an instance disk" : "image of a live instance in the store";
      if (!opts.dry_run) {
        if (Status st = touch(cache.base_dir + "/" + c.name); !st) report.notes.push_back(st.error().message);
      }
    } else {
      f.threshold_seconds = f.kind == "resized" ? opts.resized_min_age_seconds : opts.original_min_age_seconds;
      if (f.age_seconds < f.threshold_seconds) {
        f.state = "unused_young";
        f.reason = "unused, but younger than remove_unused_" + std::string(f.kind == "resized" ? "resized" : "original") +
                   "_minimum_age_seconds";
      } else {
        f.state = "removable";
        f.reason = "unused and old enough";
        to_remove.push_back(c.name);
      }
    }
    report.files.push_back(std::move(f));
  }

  auto keep_all = [&](const std::string& why) {
    for (const auto& n : to_remove) find_file(report, n)->reason += "; " + why;
    to_remove.clear();
  };
  if (!report.unreadable_disks.empty()) {
    report.complete = false;
    keep_all("not removed: " + std::to_string(report.unreadable_disks.size()) +
             " disk(s) could not be read, so nothing is provably unused");
    report.notes.push_back("removed nothing: unreadable disk " + report.unreadable_disks.front().path + " (" +
                           report.unreadable_disks.front().error + ")");
  } else if (opts.dry_run) {
    keep_all("dry run: not removed");
  } else if (!opts.remove_unused) {
    keep_all("remove_unused_base_images = false: reported only");
  }
  if (to_remove.empty()) return finish();

  // Removal. Take every candidate's lock (sorted order; a spawn holds at most
  // one), then look again at every instance directory: with the locks held no
  // spawn can be between fetching one of these bases and finishing its disk,
  // so this second look is authoritative for them. A candidate that a disk
  // now uses, that a spawn touched, or that vanished is kept.
  std::vector<BaseFileLock> locks;
  for (const auto& n : to_remove) {
    auto l = BaseFileLock::acquire(cache, n);
    if (!l) {
      report.complete = false;
      keep_all("not removed: " + l.error().message);
      return finish();
    }
    locks.push_back(std::move(l.value()));
  }
  const auto first_dirs = report.instance_dirs, first_disks = report.disks_read;
  scan.scan_instances();
  report.instance_dirs = first_dirs;  // the report counts the first look
  report.disks_read = first_disks;
  if (!report.unreadable_disks.empty()) {
    report.complete = false;
    keep_all("not removed: a disk that appeared during the pass could not be read");
    return finish();
  }
  for (const auto& n : to_remove) {
    auto* f = find_file(report, n);
    const auto& cand = *std::find_if(listing.begin(), listing.end(), [&](const auto& c) { return c.name == n; });
    const std::string path = cache.base_dir + "/" + n;
    struct stat st {};
    if (scan.in_use.count(n)) {
      f->state = "in_use";
      f->reason = "a disk created during the pass uses it";
      continue;
    }
    if (::stat(path.c_str(), &st) != 0) {
      f->state = "kept";
      f->reason = "vanished before removal";
      continue;
    }
    if (st.st_mtim.tv_sec != cand.mtime.tv_sec || st.st_mtim.tv_nsec != cand.mtime.tv_nsec) {
      f->state = "in_use";
      f->reason = "touched by a spawn during the pass";
      continue;
    }
    if (::unlink(path.c_str()) != 0) {
      report.complete = false;
      f->state = "kept";
      f->reason = std::string("removal failed: ") + std::strerror(errno);
      continue;
    }
    f->state = "removed";
    ++report.files_removed;
    report.bytes_freed += cand.bytes;
    spdlog::info("image cache: removed {} ({} bytes, unused for {} s)", path, cand.bytes, f->age_seconds);
  }
  return finish();
}

nlohmann::json to_json(const ImageCacheReport& r) {
  nlohmann::json files = nlohmann::json::array();
  std::map<std::string, std::size_t> counts;
  for (const auto& f : r.files) {
    ++counts[f.state];
    files.push_back({{"name", f.name},
                     {"kind", f.kind},
                     {"state", f.state},
                     {"reason", f.reason},
                     {"bytes", f.bytes},
                     {"age_seconds", f.age_seconds},
                     {"threshold_seconds", f.threshold_seconds}});
  }
  nlohmann::json unreadable = nlohmann::json::array();
  for (const auto& u : r.unreadable_disks) unreadable.push_back({{"path", u.path}, {"error", u.error}});
  nlohmann::json c = nlohmann::json::object();
  for (const char* s : {"in_use", "unused_young", "removable", "removed", "kept", "unknown"}) c[s] = counts[s];
  return {{"complete", r.complete},
          {"dry_run", r.dry_run},
          {"removal_enabled", r.removal_enabled},
          {"base_dir", r.base_dir},
          {"instances_considered", r.instances_considered},
          {"instance_dirs", r.instance_dirs},
          {"disks_read", r.disks_read},
          {"unreadable_disks", unreadable},
          {"counts", c},
          {"files_removed", r.files_removed},
          {"bytes_freed", r.bytes_freed},
          {"duration_seconds", r.duration_seconds},
          {"files", files},
          {"notes", r.notes}};
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
  os << pad("FILE", w) << "  " << pad("KIND", 9) << "  " << pad("STATE", 12) << "  " << pad("BYTES", 12) << "  "
     << pad("AGE(s)", 9) << "  REASON\n";
  for (const auto& f : r.files)
    os << pad(f.name, w) << "  " << pad(f.kind, 9) << "  " << pad(f.state, 12) << "  "
       << pad(std::to_string(f.bytes), 12) << "  " << pad(std::to_string(f.age_seconds), 9) << "  " << f.reason
       << "\n";
  if (r.files.empty()) os << "(no base files)\n";
  const auto j = to_json(r);
  os << "\n";
  for (const auto& [k, v] : j.at("counts").items()) os << k << "=" << v.get<std::size_t>() << " ";
  os << "\nremoved " << r.files_removed << " file(s), " << r.bytes_freed << " bytes freed; read " << r.disks_read
     << " disk(s) in " << r.instance_dirs << " instance dir(s) in " << r.duration_seconds << " s; "
     << r.instances_considered << " live instance(s) from the store\n";
  for (const auto& u : r.unreadable_disks) os << "UNREADABLE " << u.path << ": " << u.error << "\n";
  for (const auto& n : r.notes) os << "note: " << n << "\n";
  os << (r.complete ? "pass complete\n" : "PASS INCOMPLETE: nothing was removed that could not be proven unused\n");
  return os.str();
}

}  // namespace virtcap::imagecache
