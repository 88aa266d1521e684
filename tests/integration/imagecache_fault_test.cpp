// Fault injection into real system calls: the real `virtcap imagecache`
// command under strace, with EIO injected into the Nth getdents64 (directory
// listings) or pread64 (disk reads), once and from then on, for every N the
// pass makes. No in-use base may ever be removed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "common/sha1.h"
#include "common/subprocess.h"
#include "support/imagecache_fixture.h"

namespace virtcap {
namespace {

namespace fs = std::filesystem;
using testing::kDay;

using testing::sanitizer_options;

struct FaultTree {
  testing::TempDir dir{"virtcap-fault"};
  std::string instances = dir.sub("state/instances");
  std::string config;
  std::vector<std::string> used, unused;

  FaultTree() {
    fs::create_directories(instances + "/_base");
    config = dir.write("virtcap.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("state") +
                                           "\"\n[store]\nbackend = \"memory\"\n");
    for (int i = 0; i < 3; ++i) {
      used.push_back(sha1_hex("used" + std::to_string(i)));
      make_base(used.back());
      const std::string idir = instances + "/inst-" + std::to_string(i);
      fs::create_directories(idir + "/sub");
      testing::must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
                         instances + "/_base/" + used.back(), idir + (i == 2 ? "/sub/disk" : "/disk"), "1M"});
      std::ofstream(idir + "/console.log") << "boot\n";
    }
    // inst-3 holds only a subdirectory with its disk, inst-4 only a disk: a
    // fault on one path then hits exactly one kind of call (see below).
    for (const std::string& where : {std::string("inst-3/sub"), std::string("inst-4")}) {
      used.push_back(sha1_hex("used-" + where));
      make_base(used.back());
      fs::create_directories(instances + "/" + where);
      testing::must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
                         instances + "/_base/" + used.back(), instances + "/" + where + "/disk", "1M"});
    }
    for (int i = 0; i < 2; ++i) unused.push_back(sha1_hex("unused" + std::to_string(i)));
    restore_unused();
  }
  void make_base(const std::string& name) const {
    const std::string p = instances + "/_base/" + name;
    std::ofstream(p, std::ios::binary) << std::string(4096, 'b');
    testing::set_mtime(p, testing::now() - 2 * kDay);
  }
  void restore_unused() const {
    for (const auto& u : unused)
      if (!fs::exists(instances + "/_base/" + u)) make_base(u);
  }
  std::size_t unused_left() const {
    std::size_t n = 0;
    for (const auto& u : unused) n += fs::exists(instances + "/_base/" + u);
    return n;
  }
  void expect_used_intact(const std::string& what) const {
    for (const auto& u : used)
      ASSERT_TRUE(fs::exists(instances + "/_base/" + u)) << "in-use base lost with " << what;
  }
  proc::Output pass(const std::vector<std::string>& strace_args) const {
    std::vector<std::string> argv{"strace", "-f", "-qq", "-E", sanitizer_options(), "-o", "/dev/null"};
    argv.insert(argv.end(), strace_args.begin(), strace_args.end());
    for (const char* a : {VIRTCAP_BINARY, "imagecache", "--config", "", "--format", "json"})
      argv.emplace_back(a);
    argv[argv.size() - 3] = config;
    auto r = proc::run(argv);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r.value() : proc::Output{};
  }
  // How many times a clean pass calls `syscall`.
  std::size_t count(const std::string& syscall) const {
    const std::string log = dir.sub("count.log");
    auto r = proc::run({"strace", "-f", "-qq", "-E", sanitizer_options(), "-o", log, "-e", "trace=" + syscall,
                        VIRTCAP_BINARY, "imagecache", "--config", config, "--format", "json"});
    EXPECT_TRUE(r.ok() && r->exit_code == 0);
    std::ifstream in(log);
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(syscall + "(") != std::string::npos;
    return n;
  }
};

void inject_everywhere(const std::string& syscall, bool also_from_then_on = true) {
  FaultTree t;
  const std::size_t calls = t.count(syscall);
  ASSERT_GT(calls, 2u) << syscall;
  ASSERT_EQ(t.unused_left(), 0u)
      << "a clean pass must remove the unused bases (the test could not fail otherwise)";
  t.expect_used_intact("a clean pass");
  std::size_t incomplete = 0;
  for (std::size_t n = 1; n <= calls; ++n) {
    std::vector<std::string> whens{std::to_string(n)};
    if (also_from_then_on) whens.push_back(std::to_string(n) + "+");
    for (const std::string& when : whens) {
      t.restore_unused();
      const std::string spec = "inject=" + syscall + ":error=EIO:when=" + when;
      const auto out = t.pass({"-e", "trace=" + syscall, "-e", spec});
      t.expect_used_intact(spec);
      if (out.exit_code != 0) {
        ++incomplete;
        EXPECT_EQ(t.unused_left(), t.unused.size()) << spec << ": an incomplete pass removed files";
      }
    }
  }
  EXPECT_GT(incomplete, 0u) << "no injected fault was noticed at all";
  std::printf("%s: %zu calls, %zu injections, %zu reported incomplete, no in-use base lost\n",
              syscall.c_str(), calls, (also_from_then_on ? 2 : 1) * calls, incomplete);
}

TEST(ImageCacheFaults, EioInEveryDirectoryReadNeverLosesAnInUseBase) { inject_everywhere("getdents64"); }
TEST(ImageCacheFaults, EioInEveryDiskReadNeverLosesAnInUseBase) { inject_everywhere("pread64"); }
// Every openat of the process (the loader's and libvirt's included): an
// instance directory or a disk that cannot be opened makes the pass remove
// nothing.
TEST(ImageCacheFaults, EioInEveryOpenNeverLosesAnInUseBase) { inject_everywhere("openat", false); }

// A fault that persists on one path (strace -P): both looks of the pass -
// the first, and the second under the locks - fail on it, so nothing but the
// error rule keeps that instance's base. An incomplete pass removes nothing.
TEST(ImageCacheFaults, APersistentFaultOnOneInstanceRemovesNothing) {
  FaultTree t;
  // strace -P matches openat by its directory fd: "-P inst-3" fails only the
  // open of inst-3/sub (an instance's subdirectory), "-P inst-4" only the
  // open of inst-4/disk.
  const std::string i = t.instances + "/inst-";
  const std::vector<std::pair<std::string, std::string>> faults = {
      {i + "3", "openat"}, {i + "4", "openat"}, {i + "0", "getdents64"}, {i + "0/disk", "pread64"}};
  for (const auto& [path, syscall] : faults) {
    t.restore_unused();
    const std::string what = syscall + " on " + path;
    const auto out = t.pass({"-P", path, "-e", "trace=" + syscall, "-e", "inject=" + syscall + ":error=EIO"});
    t.expect_used_intact(what);
    EXPECT_EQ(out.exit_code, 1) << what << ": the pass must report itself incomplete\n" << out.err;
    EXPECT_EQ(t.unused_left(), t.unused.size()) << what << ": an incomplete pass removed files";
  }
}

// Issue 18: every unlink and rename the real pass makes stays inside the
// cache - its base directory and its own lock directory (and the host
// registry's rename of its own file) - checked with strace. With `locks` a symlink to another directory,
// nothing there is touched (neither a foreign file nor a stale lock of the cache's own pattern), and the pass
// removes nothing.
TEST(ImageCacheFaults, UnlinksAndRenamesStayInsideTheCache) {
  for (const bool symlinked : {false, true}) {
    SCOPED_TRACE(symlinked ? "locks is a symlink" : "locks is a real directory");
    FaultTree t;
    const std::string locks = t.instances + "/locks", foreign = t.dir.sub("foreign");
    const std::string gone_lock = sha1_hex("gone") + ".lock";
    fs::create_directories(foreign);
    if (symlinked)
      fs::create_directory_symlink(foreign, locks);
    else
      fs::create_directories(locks);
    const std::string where = symlinked ? foreign : locks;
    std::ofstream(where + "/app.lock") << "pid 1";
    std::ofstream(where + "/" + gone_lock) << "";
    const std::string log = t.dir.sub("unlink.log");
    auto r = proc::run({"strace", "-f", "-qq", "-y", "-E", sanitizer_options(), "-o", log, "-e",
                        "trace=unlink,unlinkat,rename,renameat,renameat2", VIRTCAP_BINARY, "imagecache",
                        "--config", t.config, "--format", "json"});
    ASSERT_TRUE(r.ok());
    const std::string base = fs::canonical(t.instances + "/_base").string();
    const std::string real_locks = fs::canonical(t.instances).string() + "/locks";
    const std::string hosts = fs::canonical(t.instances).string() + "/hosts";
    std::ifstream in(log);
    std::size_t calls = 0;  // unlinks
    for (std::string line; std::getline(in, line);) {
      if (line.find("unlink") == std::string::npos && line.find("rename") == std::string::npos) continue;
      calls += line.find("unlink") != std::string::npos;
      const auto lt = line.find('<'), gt = line.find('>');
      ASSERT_TRUE(
          (line.find("unlinkat(") != std::string::npos || line.find("renameat(") != std::string::npos) &&
          lt != std::string::npos && gt > lt)
          << "every removal and rename is relative to a checked directory fd: " << line;
      const std::string dir = line.substr(lt + 1, gt - lt - 1);
      if (line.find("renameat(") != std::string::npos)
        EXPECT_EQ(dir, hosts) << "only the host registry renames";
      else
        EXPECT_TRUE(dir == base || (!symlinked && dir == real_locks)) << line;
      EXPECT_EQ(line.find(foreign), std::string::npos) << line;
    }
    t.expect_used_intact("the strace run");
    EXPECT_TRUE(fs::exists(where + "/app.lock"));  // not a name the cache makes
    if (symlinked) {
      EXPECT_EQ(r->exit_code, 1) << "the refused lock directory makes the pass incomplete";
      EXPECT_EQ(t.unused_left(), t.unused.size());
      EXPECT_TRUE(fs::exists(foreign + "/" + gone_lock));
      EXPECT_EQ(calls, 0u);
    } else {
      EXPECT_EQ(r->exit_code, 0) << r->err;
      EXPECT_EQ(t.unused_left(), 0u);
      EXPECT_FALSE(fs::exists(locks + "/" + gone_lock))
          << "a stale lock of the cache's pattern is cleaned up";
      EXPECT_GE(calls, t.unused.size());
    }
  }
}

}  // namespace
}  // namespace virtcap
