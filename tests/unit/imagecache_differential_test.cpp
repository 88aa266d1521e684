// Differential test of the image-cache pass against qemu-img as the oracle.
//
// Random instance trees - raw and qcow2 bases (some backed by other bases);
// qcow2, qed and qcow overlays; chains through intermediate images;
// relative, absolute, double-slash, symlinked-directory, file: and json:
// backing spellings; symlink and hard-link disks; raw files; disks in
// subdirectories; missing backings. For every disk, `qemu-img info
// --backing-chain` names each file QEMU opens; each is stat()ed and every
// base whose inode appears is marked. Then the pass runs for real: every
// marked base must survive, and every unmarked old one must be gone.
//
// VIRTCAP_DIFF_TREES (default 200) trees, from VIRTCAP_DIFF_SEED (default:
// time-based, printed on failure).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "common/sha1.h"
#include "imagecache/pass.h"
#include "support/imagecache_fixture.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using testing::kDay;

struct FileKey {
  dev_t dev;
  ino_t ino;
  bool operator<(const FileKey& o) const { return std::tie(dev, ino) < std::tie(o.dev, o.ino); }
};

std::optional<FileKey> key_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileKey{st.st_dev, st.st_ino};
}

class Tree {
 public:
  Tree(std::uint64_t seed) : rng_(seed) {
    instances_ = dir_.sub("instances");
    fs::create_directories(instances_ + "/_base");
    fs::create_directory_symlink(instances_, dir_.sub("alias"));
  }

  void build() {
    const int nb = pick(2, 5);
    for (int i = 0; i < nb; ++i) {
      const std::string name = sha1_hex(std::to_string(rng_()));
      const std::string path = instances_ + "/_base/" + name;
      if (i > 0 && chance(30)) {  // a resized variant: qcow2 over an earlier base
        const auto& lower = bases_[static_cast<std::size_t>(pick(0, i - 1))];
        run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", lower.fmt, "-b",
             spell(lower.name, instances_ + "/_base", false), path + "_1048576", "1M"});
        bases_.push_back({name + "_1048576", "qcow2"});
      } else {
        write_raw(path);
        bases_.push_back({name, "raw"});
      }
    }
    for (const auto& b : bases_) testing::set_mtime(instances_ + "/_base/" + b.name, testing::now() - 2 * kDay);
    const int ni = pick(1, 4);
    for (int i = 0; i < ni; ++i) {
      const std::string idir = instances_ + "/inst-" + std::to_string(i);
      fs::create_directories(idir);
      const int nd = pick(1, 3);
      for (int d = 0; d < nd; ++d) make_entry(idir, "disk" + std::to_string(d));
    }
  }

  // The oracle: bases whose inode appears in some disk's chain per qemu-img.
  void oracle(std::set<std::string>& marked) const {
    std::map<FileKey, std::string> base_keys;
    for (const auto& b : bases_) base_keys[*key_of(instances_ + "/_base/" + b.name)] = b.name;
    for (const auto& disk : disks_) {
      std::vector<std::string> files{disk};
      auto r = proc::run({"qemu-img", "info", "-U", "--backing-chain", "--output=json", disk});
      if (r.ok() && r->exit_code == 0) {
        const auto j = nlohmann::json::parse(r->out, nullptr, false);
        if (j.is_array())
          for (const auto& img : j) files.push_back(img.value("filename", ""));
      }
      for (const auto& f : files)
        if (auto k = key_of(f); k && base_keys.count(*k)) marked.insert(base_keys.at(*k));
    }
  }

  std::string instances_path() const { return instances_; }
  const std::set<std::string>& name_matched() const { return name_matched_; }
  std::vector<std::string> base_names() const {
    std::vector<std::string> v;
    for (const auto& b : bases_) v.push_back(b.name);
    return v;
  }
  bool exists(const std::string& base) const { return fs::exists(instances_ + "/_base/" + base); }
  std::string describe() const {
    std::string out;
    for (const auto& l : log_) out += "  " + l + "\n";
    return out;
  }

 private:
  struct Base {
    std::string name, fmt;
  };

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(int percent) { return pick(1, 100) <= percent; }
  const Base& any_base() { return bases_[static_cast<std::size_t>(pick(0, static_cast<int>(bases_.size()) - 1))]; }

  void run(const std::vector<std::string>& argv) {
    std::string line;
    for (const auto& a : argv) line += a + " ";
    log_.push_back(line);
    testing::must_run(argv);
  }
  static void write_raw(const std::string& path) {
    std::ofstream(path, std::ios::binary) << std::string(4096, 'x');
  }

  // A spelling of base `name` as seen from directory `from`.
  std::string spell(const std::string& name, const std::string& from, bool allow_protocols = true) {
    const std::string abs = instances_ + "/_base/" + name;
    switch (pick(0, allow_protocols ? 6 : 3)) {
      case 0: return abs;
      case 1: return instances_ + "//_base/" + name;
      case 2: return dir_.sub("alias") + "/_base/" + name;
      case 3: return fs::relative(abs, from).string();
      case 4: return "file:" + abs;
      case 5: return R"(json:{"file":{"driver":"file","filename":")" + abs + R"("}})";
      default: return R"(json:{"file.filename":")" + dir_.sub("alias") + "/_base/" + name + R"("})";
    }
  }

  void overlay(const std::string& fmt, const std::string& path, const std::string& backing,
               const std::string& backing_fmt) {
    run({"qemu-img", "create", "-q", "-f", fmt, "-u", "-F", backing_fmt, "-b", backing, path, "1M"});
  }

  void make_entry(const std::string& idir, const std::string& name) {
    const std::string path = idir + "/" + name;
    const auto& b = any_base();
    switch (pick(0, 9)) {
      case 0:
      case 1: overlay("qcow2", path, spell(b.name, idir), b.fmt); break;
      case 2: overlay("qed", path, spell(b.name, idir, false), b.fmt); break;
      case 3: overlay("qcow", path, spell(b.name, idir, false), b.fmt); break;
      case 4: write_raw(path); break;
      case 5:
        fs::create_symlink(spell(b.name, idir, false), path);
        log_.push_back("symlink " + path);
        break;
      case 6:
        fs::create_hard_link(instances_ + "/_base/" + b.name, path);
        log_.push_back("hardlink " + path + " -> " + b.name);
        break;
      case 7: {  // a chain through an intermediate image in the instance directory
        overlay("qcow2", path + ".snap", spell(b.name, idir), b.fmt);
        overlay("qcow2", path, chance(50) ? name + ".snap" : path + ".snap", "qcow2");
        disks_.push_back(path + ".snap");
        break;
      }
      case 8: {  // in a subdirectory
        fs::create_directories(idir + "/sub");
        overlay("qcow2", idir + "/sub/" + name, spell(b.name, idir + "/sub"), b.fmt);
        disks_.push_back(idir + "/sub/" + name);
        return;
      }
      default:
        if (chance(50)) {  // another host's mount path: protected by its name
          overlay("qcow2", path, "/mnt/other-host-xyz/instances/_base/" + b.name, b.fmt);
          name_matched_.insert(b.name);
        } else {
          overlay("qcow2", path, "/mnt/other-host-xyz/not-a-base", "raw");
        }
    }
    disks_.push_back(path);
  }

  std::mt19937_64 rng_;
  testing::TempDir dir_{"virtcap-diff"};
  std::string instances_;
  std::vector<Base> bases_;
  std::vector<std::string> disks_;
  std::set<std::string> name_matched_;
  std::vector<std::string> log_;
};

std::uint64_t env_u64(const char* name, std::uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoull(v) : def;
}

TEST(ImageCacheDifferential, NoBaseThatQemuOpensIsEverRemoved) {
  const std::uint64_t trees = env_u64("VIRTCAP_DIFF_TREES", 200);
  const std::uint64_t seed = env_u64(
      "VIRTCAP_DIFF_SEED", static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::size_t removed = 0, kept = 0, by_name = 0;
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::warn);  // one info line per removal otherwise
  for (std::uint64_t t = 0; t < trees; ++t) {
    Tree tree(seed + t);
    tree.build();
    std::set<std::string> marked;
    tree.oracle(marked);
    PassOptions opts;
    opts.instances_path = tree.instances_path() + (t % 5 == 0 ? "/" : "");
    opts.progress_every = 0;
    const auto r = run_pass(opts, {});
    const std::string ctx = "VIRTCAP_DIFF_SEED=" + std::to_string(seed + t) + " VIRTCAP_DIFF_TREES=1\n" + tree.describe();
    ASSERT_TRUE(r.complete) << ctx << (r.unreadable_disks.empty() ? "" : r.unreadable_disks[0].path + ": " +
                                                                            r.unreadable_disks[0].error);
    for (const auto& b : tree.base_names()) {
      if (marked.count(b)) {
        ASSERT_TRUE(tree.exists(b)) << "in-use base " << b << " was removed\n" << ctx;
        ++kept;
      } else if (tree.name_matched().count(b)) {
        ASSERT_TRUE(tree.exists(b)) << "name-matched base " << b << " was removed\n" << ctx;
        ++by_name;
      } else if (tree.exists(b)) {
        // Kept although QEMU opens no file that is it: only the documented
        // by-name rule may do that (a backing path missing here, e.g. a
        // relative one through a symlinked disk, ending in its name).
        const auto& f = testing::Fixture::file(r, b);
        ASSERT_NE(f.reason.find("does not exist on this host ends in its name"), std::string::npos)
            << "unused old base " << b << " was kept: " << f.state << ", " << f.reason << "\n" << ctx;
        ++by_name;
      } else {
        ++removed;
      }
    }
  }
  spdlog::set_level(level);
  std::printf("%llu trees from seed %llu: %zu in-use bases kept, %zu kept by name, %zu unused removed, 0 in-use lost\n",
              static_cast<unsigned long long>(trees), static_cast<unsigned long long>(seed), kept, by_name, removed);
}

}  // namespace
}  // namespace virtcap::imagecache
