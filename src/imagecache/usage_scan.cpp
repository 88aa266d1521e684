#include "imagecache/usage_scan.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <span>
#include <thread>
#include <unordered_set>

#include "common/fd.h"
#include "imagecache/backing_spec.h"
#include "imagecache/base_cache.h"
#include "imagecache/image_probe.h"
#include "imagecache/vmdk.h"

namespace virtcap::imagecache {
namespace {

std::string err_text(int err) { return std::strerror(err); }

std::string_view last_component(std::string_view p) {
  while (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
  const auto slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

std::string_view dir_of(std::string_view p) {
  const auto slash = p.rfind('/');
  if (slash == std::string_view::npos) return ".";
  return slash == 0 ? std::string_view("/") : p.substr(0, slash);
}

// The base files, looked up by identity and by name; read-only while scanning.
struct BaseIndex {
  std::size_t count = 0;
  std::unordered_multimap<FileId, std::size_t, FileIdHash> by_id;
  std::unordered_multimap<std::string, std::size_t> by_name;
};

// What decides which files QEMU opens from an image: the file, the format
// it is opened as ("" = probed by magic), and the directory its relative
// names resolve against, as spelled. The spelling, not the directory's
// identity: `..` below a bind mount depends on the path it was reached by.
struct OpenKey {
  FileId id;
  std::string format;
  std::string dir;
  bool operator==(const OpenKey&) const = default;
};
struct OpenKeyHash {
  std::size_t operator()(const OpenKey& k) const noexcept {
    return FileIdHash{}(k.id) ^ (std::hash<std::string>{}(k.format) * 31) ^
           (std::hash<std::string>{}(k.dir) * 131);
  }
};

struct TopEntry {
  std::string name;
  unsigned char type;
};

class Scanner {
 public:
  Scanner(const ScanOptions& opts, const BaseIndex& index)
      : opts_(opts), by_id_(index.by_id), by_name_(index.by_name) {
    out_.use.resize(index.count);
  }

  // Scans some of the top-level entries of the instances directory open at `top`.
  void scan_top(int top, const std::vector<TopEntry>& entries, std::size_t first, std::size_t step) {
    for (std::size_t i = first; i < entries.size(); i += step)
      scan_entry(top, opts_.instances_path, entries[i].name, entries[i].type, 0);
  }
  UsageScan& result() { return out_; }

 private:
  void unreadable(const std::string& path, const std::string& what, int err = 0) {
    out_.unreadable.push_back({path, err ? what + ": " + err_text(err) : what});
  }

  void mark(const FileId& id, const std::string& by) {
    auto [lo, hi] = by_id_.equal_range(id);
    for (auto it = lo; it != hi; ++it) {
      BaseUse& u = out_.use[it->second];
      if (!u.used || u.by_name_only) u.by = by;
      u.used = true;
      u.by_name_only = false;
    }
  }

  // Lists one directory below instances_path (`depth` >= 1).
  void scan_dir(int dfd, const std::string& dir_path, int depth) {
    if (depth == 1) ++out_.instance_dirs;
    const int err = list_dir(
        dfd, [&](const DirEntry& e) { scan_entry(dfd, dir_path, std::string(e.name), e.type, depth); });
    // ENOENT: the directory was removed while being listed (its instance was
    // deleted): its disks are gone, like a disk that vanishes.
    if (err != 0 && err != ENOENT) unreadable(dir_path, "cannot list the directory", err);
  }

  void scan_entry(int dfd, const std::string& dir_path, const std::string& name, unsigned char type,
                  int depth) {
    const std::string path = dir_path + "/" + name;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) unreadable(path, "cannot stat", errno);
        return;
      }
      type = S_ISREG(st.st_mode)   ? DT_REG
             : S_ISDIR(st.st_mode) ? DT_DIR
             : S_ISLNK(st.st_mode) ? DT_LNK
                                   : DT_FIFO;
    }
    switch (type) {
      case DT_DIR: return enter_dir(dfd, path, name, depth, O_NOFOLLOW);
      // A file in an instance directory is a disk whatever its name (one
      // being written under a temporary name included).
      case DT_REG: return open_disk(dfd, path, name, O_NOFOLLOW, depth);
      case DT_LNK: return follow_link(dfd, path, name, depth);
      default: return;  // FIFO, socket, device: never opened, never a disk
    }
  }

  void enter_dir(int dfd, const std::string& path, const std::string& name, int depth, int nofollow) {
    if (depth + 1 > kMaxDirDepth) {
      unreadable(path, "directory nested deeper than " + std::to_string(kMaxDirDepth) +
                           " levels below instances_path; not scanned");
      return;
    }
    UniqueFd sub(::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | nofollow));
    if (!sub.valid()) {
      if (errno != ENOENT) unreadable(path, "cannot open the directory", errno);
      return;
    }
    scan_dir(sub.get(), path, depth + 1);
  }

  // A symlink in an instance directory: a disk (or directory) through it.
  void follow_link(int dfd, const std::string& path, const std::string& name, int depth) {
    struct stat st {};
    if (::fstatat(dfd, name.c_str(), &st, 0) == 0) {
      if (S_ISDIR(st.st_mode)) return enter_dir(dfd, path, name, depth, 0);
      if (S_ISREG(st.st_mode)) return open_disk(dfd, path, name, 0, depth);
      return;  // a link to a device or FIFO: never opened
    }
    const int err = errno;
    if (err != ENOENT) return unreadable(path, "cannot follow the symlink", err);
    // Dangling: the link may name a base through another host's mount path.
    char target[4096];
    const ssize_t n = ::readlinkat(dfd, name.c_str(), target, sizeof target);
    if (n < 0) {
      if (errno != ENOENT) unreadable(path, "cannot read the symlink", errno);
      return;
    }
    missing_target(path, std::string(target, static_cast<std::size_t>(n)));
  }

  void open_disk(int dfd, const std::string& path, const std::string& name, int nofollow, int depth) {
    UniqueFd fd(::openat(dfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | nofollow));
    if (!fd.valid()) {
      const int err = errno;
      if (err == ENOENT) return;                                                 // deleted since the listing
      if (err == ELOOP && nofollow) return follow_link(dfd, path, name, depth);  // became a symlink
      return unreadable(path, "cannot open", err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return unreadable(path, "cannot stat", errno);
    if (!S_ISREG(st.st_mode)) return;  // replaced by a FIFO or device since the listing
    ++out_.disks_read;
    const FileId id{st.st_dev, st.st_ino};
    mark(id, path);
    follow_chain(fd.get(), id, path);
    if (opts_.progress_every && out_.disks_read % opts_.progress_every == 0)
      spdlog::info("image cache: {} disks read in {} instance directories so far", out_.disks_read,
                   out_.instance_dirs);
  }

  // Follows the chain of the disk open at `top_fd`, one image at a time:
  // every file each image makes QEMU open is marked. An image already
  // followed under the same key (file, format, directory) is not read again.
  void follow_chain(int top_fd, const FileId& top_id, const std::string& disk) {
    const std::size_t before = out_.unreadable.size();
    std::unordered_set<OpenKey, OpenKeyHash> in_chain{{top_id, "", std::string(dir_of(disk))}};
    std::vector<OpenKey> keys;  // the images below the top, in order
    UniqueFd held;              // the image being read, below the top
    int fd = top_fd;
    std::string path = disk, format;  // format: declared by the image above; "" = probed
    for (;;) {
      auto refs = probe_image(fd, path, format);
      if (!refs.ok()) return unreadable(disk, refs.error().message);
      const std::string dir(dir_of(path));
      follow_data_files(*refs, dir, disk);
      if (out_.unreadable.size() != before || refs->backing.empty()) break;
      const auto t = classify_backing(refs->backing, dir);
      if (t.kind == BackingTarget::Kind::remote) break;  // not a local file: never a base
      if (t.kind == BackingTarget::Kind::unreadable)
        return unreadable(disk,
                          "'" + path + "' has a backing file this pass cannot follow (" + t.detail + ")");
      FileId id;
      if (!stat_ref(t.path, disk, id, "backing file")) break;  // missing (reported) or unreadable
      mark(id, disk);
      format = t.format.empty() ? refs->backing_format : t.format;
      if (format_has_no_references(format)) break;
      OpenKey key{id, format, std::string(dir_of(t.path))};
      if (followed_.count(key)) break;  // its chain is known already
      if (!in_chain.insert(key).second)
        return unreadable(disk, "its backing chain loops back to '" + t.path + "'");
      if (keys.size() + 1 >= kMaxChainDepth)
        return unreadable(disk,
                          "its backing chain is longer than " + std::to_string(kMaxChainDepth) + " images");
      keys.push_back(std::move(key));
      UniqueFd next = open_ref(t.path, id, disk);
      if (!next.valid()) return;
      held = std::move(next);
      fd = held.get();
      path = t.path;
    }
    if (out_.unreadable.size() == before)
      for (auto& k : keys) followed_.insert(std::move(k));
  }

  // Opens a referenced file (symlinks followed) and checks it is still the
  // file stat()ed as `id`; invalid (and reported) otherwise.
  UniqueFd open_ref(const std::string& path, const FileId& id, const std::string& disk) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (!fd.valid()) {
      const int err = errno;  // before any allocation
      unreadable(disk, "cannot open '" + path + "'", err);
      return fd;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      const int err = errno;
      unreadable(disk, "cannot stat '" + path + "'", err);
      fd.reset();
    } else if (FileId{st.st_dev, st.st_ino} != id) {
      unreadable(disk, "'" + path + "' was replaced while being read");
      fd.reset();
    }
    return fd;
  }

  // The files an image opens besides its backing file: a qcow2 external
  // data file and VMDK extents. Each is marked; a sparse extent's header is
  // read, since one that holds a descriptor of its own names more files.
  void follow_data_files(const ImageRefs& refs, const std::string& dir, const std::string& disk) {
    if (!refs.data_file.empty()) {
      const auto t = classify_backing(refs.data_file, dir);
      if (t.kind == BackingTarget::Kind::unreadable) return unreadable(disk, "its data file: " + t.detail);
      FileId id;
      if (t.kind == BackingTarget::Kind::local && stat_ref(t.path, disk, id, "data file")) mark(id, disk);
    }
    for (const auto& e : refs.extents) {
      const auto t = classify_backing(e.name, dir);
      if (t.kind == BackingTarget::Kind::unreadable) return unreadable(disk, "its VMDK extent: " + t.detail);
      if (t.kind == BackingTarget::Kind::remote) continue;
      if (!t.format.empty() && t.format != "raw")
        return unreadable(disk, "its VMDK extent '" + e.name + "' forces the format " + t.format);
      FileId id;
      if (!stat_ref(t.path, disk, id, "VMDK extent")) continue;
      mark(id, disk);
      if (e.kind == vmdk::ExtentKind::sparse) check_sparse_extent(t.path, id, disk);
    }
  }

  void check_sparse_extent(const std::string& path, const FileId& id, const std::string& disk) {
    UniqueFd fd = open_ref(path, id, disk);
    if (!fd.valid()) return;
    std::array<std::uint8_t, 64> head{};
    const long long n = pread_full(fd.get(), head.data(), head.size(), 0);
    if (n < 0) return unreadable(disk, "cannot read its VMDK extent '" + path + "'", static_cast<int>(-n));
    const std::span<const std::uint8_t> got(head.data(), static_cast<std::size_t>(n));
    if (got.size() >= 4 && std::memcmp(got.data(), "KDMV", 4) == 0 &&
        vmdk::sparse_header(got).embedded_descriptor())
      unreadable(disk, "its VMDK extent '" + path +
                           "' holds a descriptor of its own, which this pass does not follow");
  }

  // stat()s a referenced path (following symlinks). False when there is
  // nothing to mark: missing (reported or matched by name) or an error.
  bool stat_ref(const std::string& path, const std::string& disk, FileId& id, const char* what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      if (err == ENOENT)
        missing_target(disk, path);
      else
        unreadable(disk, std::string("cannot stat its ") + what + " '" + path + "'", err);
      return false;
    }
    if (!S_ISREG(st.st_mode)) {
      unreadable(disk, std::string("its ") + what + " '" + path + "' is not a regular file");
      return false;
    }
    id = {st.st_dev, st.st_ino};
    return true;
  }

  void missing_target(const std::string& disk, const std::string& path) {
    auto it = by_name_.find(std::string(last_component(path)));
    if (it == by_name_.end()) {
      out_.missing.push_back({disk, path});
      return;
    }
    ++out_.name_matches;
    auto range = by_name_.equal_range(it->first);
    for (auto i = range.first; i != range.second; ++i) {
      BaseUse& u = out_.use[i->second];
      if (!u.used) {
        u.used = true;
        u.by_name_only = true;
        u.by = disk + " (via the missing path " + path + ")";
      }
    }
  }

  const ScanOptions& opts_;
  UsageScan out_;
  const std::unordered_multimap<FileId, std::size_t, FileIdHash>& by_id_;
  const std::unordered_multimap<std::string, std::size_t>& by_name_;
  std::unordered_set<OpenKey, OpenKeyHash> followed_;  // images whose whole chain was read
};

// Folds one thread's findings into the total.
void merge(UsageScan& into, UsageScan&& part) {
  for (std::size_t i = 0; i < into.use.size(); ++i) {
    BaseUse& a = into.use[i];
    BaseUse& b = part.use[i];
    if (!b.used) continue;
    if (!a.used || (a.by_name_only && !b.by_name_only)) a = std::move(b);
  }
  for (auto& u : part.unreadable) into.unreadable.push_back(std::move(u));
  for (auto& m : part.missing) into.missing.push_back(std::move(m));
  into.name_matches += part.name_matches;
  into.instance_dirs += part.instance_dirs;
  into.disks_read += part.disks_read;
}

// Below this many instance directories one thread does it all.
constexpr std::size_t kParallelMinEntries = 256;

}  // namespace

UsageScan scan_usage(const ScanOptions& opts, const std::vector<BaseEntry>& bases) {
  BaseIndex index;
  index.count = bases.size();
  for (std::size_t i = 0; i < bases.size(); ++i) {
    index.by_id.emplace(bases[i].id, i);
    index.by_name.emplace(bases[i].name, i);
  }
  UsageScan total;
  total.use.resize(bases.size());
  UniqueFd top(::open(opts.instances_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!top.valid()) {
    // No instances directory: no disks. Anything else: we cannot know.
    if (errno != ENOENT)
      total.unreadable.push_back(
          {opts.instances_path, "cannot open the instances directory: " + err_text(errno)});
    return total;
  }
  std::vector<TopEntry> entries;
  const int err = list_dir(top.get(), [&](const DirEntry& e) {
    if (std::find(opts.reserved.begin(), opts.reserved.end(), e.name) == opts.reserved.end())
      entries.push_back({std::string(e.name), e.type});
  });
  if (err != 0)
    total.unreadable.push_back({opts.instances_path, "cannot list the directory: " + err_text(err)});

  // Instance directories are independent: several threads read them (each
  // with its own findings, merged at the end; the base index is shared
  // read-only).
  const std::size_t threads = entries.size() < kParallelMinEntries
                                  ? 1
                                  : std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 8);
  std::vector<Scanner> scanners;
  scanners.reserve(threads);
  for (std::size_t t = 0; t < threads; ++t) scanners.emplace_back(opts, index);
  {
    std::vector<std::jthread> workers;
    for (std::size_t t = 1; t < threads; ++t)
      workers.emplace_back([&, t] { scanners[t].scan_top(top.get(), entries, t, threads); });
    scanners[0].scan_top(top.get(), entries, 0, threads);
  }
  for (auto& s : scanners) merge(total, std::move(s.result()));
  return total;
}

}  // namespace virtcap::imagecache
