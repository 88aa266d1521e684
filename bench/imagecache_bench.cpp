// The image-cache pass (imagecache::run_pass, dry_run: the decision without
// removal) on a realistic fixture on local disk, against:
//  (a) the reference implementation's way: `qemu-img info --force-share
//      --output=json <disk>` per disk, JSON parsed for backing-filename
//      (goal: the pass is at least 300x faster);
//  (b) the physical floor: open + pread + close of every disk, paths known in
//      advance, and the same with the directory listing the pass cannot avoid
//      (it must find "any file with the qcow2 magic" in each instance
//      directory) (goal: the pass within 2x of the floor, i.e. RATIO >= 0.5x);
//      plus, for information, the listing floor without glibc's fdopendir
//      (raw getdents64), the least a single-threaded listing pass can do;
//  (c) with --peak-memory=N: peak RSS of one pass over N disks (goal for
//      N = 100,000: under 100 MiB): ru_maxrss before (the peak reset through
//      /proc/self/clear_refs first) and after, and, exactly, the pass's own
//      peak heap (operator new/delete counted in that mode only).
//
// Fixture, under /var/tmp (local disk; removed at exit, also on SIGINT/SIGTERM):
//   <root>/instances/_base/<sha1-hex of "bench-image-<j>">   2,000 raw files, 64 KiB each
//   <root>/instances/<uuid>/disk                             qcow2 overlays, disk i on base i % 2000
// One template overlay is made with `qemu-img create -f qcow2 -F raw -b <base0>`;
// every disk is a copy of its bytes with the backing file name replaced (all
// base paths have the same length, so the header's backing offset and size
// stay valid). Copies are written sparse (only the template's non-zero 4 KiB
// blocks, then ftruncate to the template's size): byte for byte the same
// file, without 190 KiB of zeros per disk on the disk. A few disks are checked
// with `qemu-img info --output=json` at setup, and one pass is checked to read
// every disk and find every base in use, so the fixture is real.
//
// Warm cache, on purpose and on both sides: the fixture is synced to disk
// (so no writeback runs during the measurements) and then read once in full
// (floor loop with listing + one pass) before anything is timed. Every
// benchmark therefore reads the same files from the page cache, with dentries
// and inodes cached: what is compared is CPU and syscall work, not the device.
// A cold-cache pass on a real host is dominated by device latency for both
// the pass and the floor alike.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/sha1.h"
#include "common/subprocess.h"
#include "imagecache/pass.h"
#include "imagecache/qcow2.h"
#include "ratio.h"

// Heap accounting for --peak-memory (off otherwise): every operator new /
// delete of the process adjusts a live-bytes count and its high-water mark,
// so the pass's own peak heap is measured exactly, whatever RSS does.
namespace heap {
bool counting = false;
std::size_t live = 0, peak = 0;
inline void add(void* p) {
  if (!counting || !p) return;
  live += ::malloc_usable_size(p);
  peak = std::max(peak, live);
}
inline void sub(void* p) {
  if (!counting || !p) return;
  const std::size_t n = ::malloc_usable_size(p);
  live = n > live ? 0 : live - n;
}
}  // namespace heap

// Out of line, so GCC does not see free() on operator new's pointers.
[[gnu::noinline]] void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  heap::add(p);
  return p;
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
  heap::sub(p);
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

namespace {

namespace fs = std::filesystem;
using namespace virtcap;

constexpr int kBases = 2000;
constexpr int kDisks = 10000;
constexpr std::size_t kBaseBytes = 64 * 1024;
// read_header_fd()'s first pread: one 4 KiB page (kFirstRead in
// src/imagecache/qcow2.cpp, not exported). It holds the whole header area of
// every image QEMU writes, so for these disks it is the only read. The floor
// reads exactly as many bytes.
constexpr std::size_t kReaderFirstPread = 4096;
constexpr std::size_t kBlock = 4096;
// Seconds each in-process benchmark runs (several iterations: the host may be
// shared, so one iteration of a few hundred ms is too easily disturbed).
constexpr double kMinTime = 2.0;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "imagecache_bench: %s\n", msg.c_str());
  std::exit(2);  // runs the destructors: the fixture is removed
}

// ---- removal of the fixture, also when interrupted ---------------------------

// Roots to remove on SIGINT/SIGTERM (the baseline alone runs ~40 s). The
// handler only uses async-signal-safe calls: fork, execve, waitpid, raise.
constexpr int kMaxRoots = 4;
char g_roots[kMaxRoots][PATH_MAX];

extern "C" void remove_roots_and_die(int sig) {
  for (auto& root : g_roots) {
    if (root[0] == '\0') continue;
    const pid_t pid = ::fork();
    if (pid == 0) {
      char rm[] = "/bin/rm", rf[] = "-rf", dd[] = "--";
      char* argv[] = {rm, rf, dd, root, nullptr};
      char* envp[] = {nullptr};
      ::execve(rm, argv, envp);
      ::_exit(127);
    }
    if (pid > 0) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void register_root(const std::string& root) {
  for (auto& slot : g_roots)
    if (slot[0] == '\0') {
      std::snprintf(slot, sizeof slot, "%s", root.c_str());
      break;
    }
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = remove_roots_and_die;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
    return true;
  }();
  (void)installed;
}

void unregister_root(const std::string& root) {
  for (auto& slot : g_roots)
    if (root == slot) slot[0] = '\0';
}

// ---- fixture ------------------------------------------------------------------

std::string uuid_of(int i) {
  const std::string h = sha1_hex("bench-instance-" + std::to_string(i));
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
         h.substr(20, 12);
}

std::string image_id_of(int j) { return "bench-image-" + std::to_string(j); }

std::uint64_t be(const std::vector<std::uint8_t>& b, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int k = 0; k < bytes; ++k) v = (v << 8) | b[at + static_cast<std::size_t>(k)];
  return v;
}

void write_all(int fd, const std::uint8_t* p, std::size_t n, off_t at, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, at);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write " + path + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
    at += w;
  }
}

struct Fixture {
  std::string root;       // the mkdtemp directory
  std::string instances;  // <root>/instances
  std::string base_dir;   // <instances>/_base
  std::vector<std::string> base_paths;
  std::vector<std::string> disk_paths;  // kept only when asked (the floor needs them)
  std::vector<InstanceRecord> live;     // what the manager hands down: one live instance per disk
  int disks = 0;

  Fixture(int n_disks, int n_bases, bool keep_paths) : disks(n_disks) {
    const auto t0 = std::chrono::steady_clock::now();
    auto phase = [&](const char* what) {
      std::fprintf(stderr, "fixture: %s (%.1f s)\n", what,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };
    char tmpl[] = "/var/tmp/virtcap-imagecache-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) die(std::string("mkdtemp under /var/tmp: ") + std::strerror(errno));
    root = tmpl;
    register_root(root);
    instances = root + "/instances";
    base_dir = instances + "/_base";
    fs::create_directories(base_dir);

    // Bases: small raw files (never starting with the qcow2 magic).
    std::vector<std::uint8_t> content(kBaseBytes);
    for (int j = 0; j < n_bases; ++j) {
      for (std::size_t k = 0; k < content.size(); ++k) content[k] = static_cast<std::uint8_t>(j * 31 + k);
      const std::string path = base_dir + "/" + sha1_hex(image_id_of(j));
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) die("create " + path + ": " + std::strerror(errno));
      write_all(fd, content.data(), content.size(), 0, path);
      ::close(fd);
      base_paths.push_back(path);
    }

    phase("bases written");
    // The template overlay, by qemu-img.
    const std::string tmpl_path = root + "/template.qcow2";
    auto made =
        proc::run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base_paths[0], tmpl_path});
    if (!made.ok() || made->exit_code != 0)
      die("qemu-img create: " + (made.ok() ? made->err : made.error().describe()));
    std::vector<std::uint8_t> bytes;
    {
      std::ifstream in(tmpl_path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    if (bytes.size() < 72 || std::memcmp(bytes.data(), "QFI\xfb", 4) != 0)
      die("template is not a qcow2 image");
    const std::size_t name_at = be(bytes, 8, 8), name_len = be(bytes, 16, 4);
    if (name_len != base_paths[0].size() || name_at + name_len > kBlock ||
        std::memcmp(bytes.data() + name_at, base_paths[0].data(), name_len) != 0)
      die("template's backing file name is not where the header says, or not in its first 4 KiB");
    // The template's non-zero blocks: the only ones written (the name's block is one).
    std::vector<std::size_t> blocks;
    for (std::size_t at = 0; at < bytes.size(); at += kBlock) {
      const std::size_t n = std::min(kBlock, bytes.size() - at);
      if (at == 0 ||
          std::any_of(bytes.begin() + static_cast<long>(at), bytes.begin() + static_cast<long>(at + n),
                      [](std::uint8_t c) { return c != 0; }))
        blocks.push_back(at);
    }

    // The disks.
    if (keep_paths) disk_paths.reserve(static_cast<std::size_t>(n_disks));
    live.reserve(static_cast<std::size_t>(n_disks));
    for (int i = 0; i < n_disks; ++i) {
      const int j = i % n_bases;
      const std::string dir = instances + "/" + uuid_of(i);
      if (::mkdir(dir.c_str(), 0755) != 0) die("mkdir " + dir + ": " + std::strerror(errno));
      const std::string path = dir + "/disk";
      std::memcpy(bytes.data() + name_at, base_paths[static_cast<std::size_t>(j)].data(), name_len);
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) die("create " + path + ": " + std::strerror(errno));
      for (std::size_t at : blocks)
        write_all(fd, bytes.data() + at, std::min(kBlock, bytes.size() - at), static_cast<off_t>(at), path);
      if (::ftruncate(fd, static_cast<off_t>(bytes.size())) != 0) die("ftruncate " + path);
      ::close(fd);
      if (keep_paths) disk_paths.push_back(path);
      InstanceRecord r;
      r.uuid = uuid_of(i);
      r.host = "bench-host";
      r.image_id = image_id_of(j);
      r.vm_state = VmState::active;
      live.push_back(std::move(r));
    }

    phase("disks written");
    // The fixture is real: qemu-img reads a few of the generated disks.
    std::set<int> probe{0, 1, n_bases - 1, n_bases, n_disks / 2, n_disks - 1};
    for (int i : probe) {
      if (i < 0 || i >= n_disks) continue;
      const std::string path = instances + "/" + uuid_of(i) + "/disk";
      const std::string& want = base_paths[static_cast<std::size_t>(i % n_bases)];
      auto out = proc::run({"qemu-img", "info", "--output=json", path});
      if (!out.ok() || out->exit_code != 0)
        die("qemu-img info " + path + ": " + (out.ok() ? out->err : out.error().describe()));
      const auto j = nlohmann::json::parse(out->out);
      if (j.value("format", "") != "qcow2" || j.value("backing-filename", "") != want ||
          j.value("backing-filename-format", "") != "raw")
        die("qemu-img info disagrees with the fixture for " + path + ": " + out->out);
    }

    // On disk before anything is timed: no writeback during the measurements.
    const int rfd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd >= 0) {
      ::syncfs(rfd);
      ::close(rfd);
    }
    phase("checked with qemu-img info and synced");
  }

  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;
  // Removal in parallel: on a filesystem mounted with `discard` (as here),
  // every freed extent is a synchronous discard of a few ms, so a serial
  // removal of 10,000 instance directories takes minutes; 32 threads overlap
  // the waits.
  ~Fixture() {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<fs::path> victims;
    std::error_code ec;
    for (const auto& dir : {fs::path(base_dir), fs::path(instances)})
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->path() != fs::path(base_dir)) victims.push_back(it->path());
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 32; ++t)
      workers.emplace_back([&] {
        std::error_code e;
        for (std::size_t i; (i = next.fetch_add(1)) < victims.size();) fs::remove_all(victims[i], e);
      });
    for (auto& w : workers) w.join();
    fs::remove_all(root, ec);
    unregister_root(root);
    std::fprintf(stderr, "fixture: removed (%.1f s)\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  imagecache::PassOptions options() const {
    imagecache::PassOptions o;
    o.instances_path = instances;
    o.dry_run = true;
    o.progress_every = 0;
    return o;
  }
};

// ---- the floors (also the warm-up) ----------------------------------------------

// open + pread(first 4 KiB) + close of each path; returns how many had the magic.
std::size_t floor_known_paths(const std::vector<std::string>& paths) {
  std::array<std::uint8_t, kReaderFirstPread> buf;
  std::size_t qcow2 = 0;
  for (const auto& p : paths) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::pread(fd, buf.data(), buf.size(), 0) >= 4 && std::memcmp(buf.data(), "QFI\xfb", 4) == 0) ++qcow2;
    ::close(fd);
  }
  return qcow2;
}

// The same, finding the disks as the pass must: list <instances>, then list
// each instance directory (opendir/readdir) and open + pread + close each file.
std::size_t floor_with_listing(const std::string& instances) {
  std::array<std::uint8_t, kReaderFirstPread> buf;
  std::size_t qcow2 = 0;
  DIR* top = ::opendir(instances.c_str());
  if (!top) return 0;
  while (dirent* e = ::readdir(top)) {
    if (e->d_name[0] == '.' || std::strcmp(e->d_name, "_base") == 0) continue;
    const int dfd = ::openat(::dirfd(top), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) continue;
    DIR* d = ::fdopendir(dfd);
    if (!d) {
      ::close(dfd);
      continue;
    }
    while (dirent* f = ::readdir(d)) {
      if (f->d_name[0] == '.') continue;
      const int fd = ::openat(dfd, f->d_name, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      if (::pread(fd, buf.data(), buf.size(), 0) >= 4 && std::memcmp(buf.data(), "QFI\xfb", 4) == 0) ++qcow2;
      ::close(fd);
    }
    ::closedir(d);
  }
  ::closedir(top);
  return qcow2;
}

// What a single-threaded listing pass could get down to: the same walk with
// raw getdents64 on the fd from openat (no fdopendir: glibc's fdopendir adds
// an fstat and two fcntl calls per directory), so 7 syscalls per instance
// directory with one disk instead of 10. Informational (not a goal).
std::size_t floor_with_raw_getdents(const std::string& instances) {
  alignas(8) static std::uint8_t top_buf[32768];
  alignas(8) static std::uint8_t dir_buf[4096];
  std::array<std::uint8_t, kReaderFirstPread> buf;
  std::size_t qcow2 = 0;
  const int top = ::open(instances.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (top < 0) return 0;
  for (ssize_t n; (n = ::getdents64(top, top_buf, sizeof top_buf)) > 0;) {
    for (ssize_t pos = 0; pos < n;) {
      const auto* e = reinterpret_cast<const struct dirent64*>(top_buf + pos);
      pos += e->d_reclen;
      if (e->d_name[0] == '.' || std::strcmp(e->d_name, "_base") == 0) continue;
      const int dfd = ::openat(top, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd < 0) continue;
      for (ssize_t m; (m = ::getdents64(dfd, dir_buf, sizeof dir_buf)) > 0;) {
        for (ssize_t at = 0; at < m;) {
          const auto* f = reinterpret_cast<const struct dirent64*>(dir_buf + at);
          at += f->d_reclen;
          if (f->d_name[0] == '.') continue;
          const int fd = ::openat(dfd, f->d_name, O_RDONLY | O_CLOEXEC);
          if (fd < 0) continue;
          if (::pread(fd, buf.data(), buf.size(), 0) >= 4 && std::memcmp(buf.data(), "QFI\xfb", 4) == 0)
            ++qcow2;
          ::close(fd);
        }
      }
      ::close(dfd);
    }
  }
  ::close(top);
  return qcow2;
}

// A pass that saw the whole fixture: every disk read, nothing unreadable,
// every base in use. Empty when so, else what is wrong.
std::string check_report(const ImageCacheReport& r, const Fixture& f, std::size_t bases) {
  if (!r.complete || !r.unreadable_disks.empty())
    return "pass incomplete: " +
           (r.unreadable_disks.empty() ? std::string("?") : r.unreadable_disks.front().error);
  if (r.disks_read != static_cast<std::size_t>(f.disks) ||
      r.instance_dirs != static_cast<std::size_t>(f.disks))
    return "pass read " + std::to_string(r.disks_read) + " disks in " + std::to_string(r.instance_dirs) +
           " directories, expected " + std::to_string(f.disks);
  if (r.files.size() != bases) return "pass listed " + std::to_string(r.files.size()) + " base files";
  for (const auto& b : r.files)
    if (b.state != BaseFileState::in_use)
      return "base " + b.name + " is " + std::string(to_string(b.state)) + " (" + b.reason + ")";
  return {};
}

const Fixture& fixture() {
  static const Fixture f(kDisks, kBases, true);
  static const bool warmed = [] {
    // Warm-up (see the top of the file): every file the benchmarks read is
    // read once, and the pass is checked to see the whole fixture.
    if (floor_with_listing(f.instances) != static_cast<std::size_t>(kDisks) ||
        floor_known_paths(f.disk_paths) != static_cast<std::size_t>(kDisks) ||
        floor_with_raw_getdents(f.instances) != static_cast<std::size_t>(kDisks))
      die("warm-up did not find every disk");
    if (auto bad = check_report(imagecache::run_pass(f.options(), {}), f, kBases); !bad.empty()) die(bad);
    if (auto bad = check_report(imagecache::run_pass(f.options(), f.live), f, kBases); !bad.empty()) die(bad);
    std::fprintf(stderr, "fixture: warmed up and checked\n");
    return true;
  }();
  (void)warmed;
  return f;
}

void per_disk(benchmark::State& state) {
  // Seconds per disk, printed with an SI prefix (e.g. "2.1u" = 2.1 us).
  state.counters["per_disk"] =
      benchmark::Counter(kDisks, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// ---- benchmarks -------------------------------------------------------------------

void BM_Floor_OpenPreadClose(benchmark::State& state) {
  const auto& f = fixture();
  for (auto _ : state) {
    auto n = floor_known_paths(f.disk_paths);
    benchmark::DoNotOptimize(n);
  }
  per_disk(state);
}
BENCHMARK(BM_Floor_OpenPreadClose)->MinTime(kMinTime)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Floor_ListOpenPreadClose(benchmark::State& state) {
  const auto& f = fixture();
  for (auto _ : state) {
    auto n = floor_with_listing(f.instances);
    benchmark::DoNotOptimize(n);
  }
  per_disk(state);
}
BENCHMARK(BM_Floor_ListOpenPreadClose)->MinTime(kMinTime)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Floor_RawGetdentsOpenPreadClose(benchmark::State& state) {
  const auto& f = fixture();
  for (auto _ : state) {
    auto n = floor_with_raw_getdents(f.instances);
    benchmark::DoNotOptimize(n);
  }
  per_disk(state);
}
BENCHMARK(BM_Floor_RawGetdentsOpenPreadClose)
    ->MinTime(kMinTime)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The full pass as the manager runs it: 10,000 live instances handed down.
void BM_Ours_RunPassDryRun(benchmark::State& state) {
  const auto& f = fixture();
  const auto opts = f.options();
  for (auto _ : state) {
    auto r = imagecache::run_pass(opts, f.live);
    benchmark::DoNotOptimize(r);
  }
  per_disk(state);
}
BENCHMARK(BM_Ours_RunPassDryRun)->MinTime(kMinTime)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same with no live instances: the disk scan alone decides.
void BM_Ours_RunPassDryRun_NoLiveList(benchmark::State& state) {
  const auto& f = fixture();
  const auto opts = f.options();
  const std::vector<InstanceRecord> none;
  for (auto _ : state) {
    auto r = imagecache::run_pass(opts, none);
    benchmark::DoNotOptimize(r);
  }
  per_disk(state);
}
BENCHMARK(BM_Ours_RunPassDryRun_NoLiveList)->MinTime(kMinTime)->UseRealTime()->Unit(benchmark::kMillisecond);

// The reference implementation's way: one `qemu-img info` per disk, its JSON
// parsed for the backing file; the set of backing files is what is in use.
void BM_Baseline_QemuImgInfoPerDisk(benchmark::State& state) {
  const auto& f = fixture();
  for (auto _ : state) {
    std::set<std::string> in_use;
    for (const auto& p : f.disk_paths) {
      auto out = proc::run({"qemu-img", "info", "--force-share", "--output=json", p});
      if (!out.ok() || out->exit_code != 0) {
        state.SkipWithError(("qemu-img info failed on " + p).c_str());
        return;
      }
      const auto j = nlohmann::json::parse(out->out);
      if (auto it = j.find("backing-filename"); it != j.end()) in_use.insert(it->get<std::string>());
    }
    if (in_use.size() != static_cast<std::size_t>(kBases)) {
      state.SkipWithError("qemu-img did not find every base in use");
      return;
    }
    benchmark::DoNotOptimize(in_use);
  }
  per_disk(state);
}
BENCHMARK(BM_Baseline_QemuImgInfoPerDisk)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// ---- --peak-memory=N --------------------------------------------------------------

long maxrss_kib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;  // KiB on Linux
}

long vm_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

int peak_memory(int disks) {
  std::fprintf(stderr, "building a %d-disk fixture over %d bases under /var/tmp...\n", disks, kBases);
  heap::counting = true;
  // The disk paths are not kept: the fixture's own memory stays small. The
  // list of live instances (one per disk) is the caller's, as in the manager.
  Fixture f(disks, kBases, false);
  // ru_maxrss is a high-water mark: reset it (clear_refs "5" resets the
  // process's peak RSS, which getrusage reports when no thread has exited),
  // so "before" is the RSS at the pass's start, not an earlier peak of the
  // fixture's construction.
  bool reset = false;
  if (const int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC); fd >= 0) {
    reset = ::write(fd, "5", 1) == 1;
    ::close(fd);
  }
  const long before = maxrss_kib(), rss_before = vm_rss_kib();
  const std::size_t heap_before = heap::live;
  heap::peak = heap::live;
  const auto r = imagecache::run_pass(f.options(), f.live);
  const long after = maxrss_kib();
  const std::size_t heap_peak = heap::peak;
  if (auto bad = check_report(r, f, kBases); !bad.empty()) die(bad);
  const double mib = 1024.0;
  std::printf("pass: %zu disks in %zu instance directories, %zu base files, %.3f s (dry run)\n", r.disks_read,
              r.instance_dirs, r.files.size(), r.duration_seconds);
  std::printf("VmRSS at the pass's start: %.1f MiB; peak RSS reset before the pass: %s\n",
              static_cast<double>(rss_before) / mib, reset ? "yes" : "no (maxrss_before is an earlier peak)");
  std::printf("PASS_HEAP disks=%d heap_before_mib=%.1f heap_peak_mib=%.1f pass_peak_heap_mib=%.1f\n", disks,
              static_cast<double>(heap_before) / (mib * mib), static_cast<double>(heap_peak) / (mib * mib),
              static_cast<double>(heap_peak - heap_before) / (mib * mib));
  std::printf("PEAK_MEMORY disks=%d maxrss_before_mib=%.1f maxrss_after_mib=%.1f delta_mib=%.1f\n", disks,
              static_cast<double>(before) / mib, static_cast<double>(after) / mib,
              static_cast<double>(after - before) / mib);
  std::fflush(stdout);  // before the fixture's removal reports on stderr
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  // --peak-memory=N is ours: taken out before Google Benchmark sees argv.
  int peak_disks = 0;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--peak-memory=", 14) == 0) {
      char* end = nullptr;
      const long n = std::strtol(argv[i] + 14, &end, 10);
      if (!end || *end != '\0' || n <= 0 || n > 10'000'000) die(std::string("bad ") + argv[i]);
      peak_disks = static_cast<int>(n);
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  argv[argc] = nullptr;
  if (peak_disks > 0) return peak_memory(peak_disks);

  // Names as Google Benchmark prints them (MinTime and UseRealTime add suffixes).
  return virtcap::bench::run_with_ratios(
      argc, argv,
      {{"BM_Baseline_QemuImgInfoPerDisk/iterations:1/real_time",
        "BM_Ours_RunPassDryRun/min_time:2.000/real_time", "pass vs qemu-img info per disk (goal >= 300x)"},
       {"BM_Floor_OpenPreadClose/min_time:2.000/real_time", "BM_Ours_RunPassDryRun/min_time:2.000/real_time",
        "pass vs floor open+pread+close (goal >= 0.5x)"},
       {"BM_Floor_ListOpenPreadClose/min_time:2.000/real_time",
        "BM_Ours_RunPassDryRun/min_time:2.000/real_time",
        "pass vs floor list+open+pread+close (goal >= 0.5x)"},
       {"BM_Floor_RawGetdentsOpenPreadClose/min_time:2.000/real_time",
        "BM_Ours_RunPassDryRun/min_time:2.000/real_time",
        "pass vs floor raw-getdents list (informational)"}});
}
