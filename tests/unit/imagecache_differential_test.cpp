// Differential test of the image-cache pass against qemu-img as the oracle.
//
// Random instance trees - raw, qcow2 and VMDK bases (some backed by other
// bases); qcow2, qed, qcow and VMDK overlays; chains through intermediate
// images, and chains of 2-64 images outside the instances directory;
// relative, absolute, double-slash, symlinked-directory, file: and json:
// backing spellings; symlink and hard-link disks; raw files; disks in
// subdirectories; missing backings. Issue 18's shapes: the same image
// reached as raw and as qcow2; a relative backing reached through two
// directories; VMDKs with a zeroed descriptor offset or size, "KDMV"
// descriptor holders and text descriptors whose FLAT and SPARSE extents name
// bases; json: backings with colliding keys (the pass must then remove
// nothing). For every disk, `qemu-img info --backing-chain` names each file
// QEMU opens (images, data files, VMDK extents); each is stat()ed and every
// base whose inode appears is marked. Then the pass runs for real: every
// marked base must survive, and every unmarked old one must be gone.
//
// VIRTCAP_DIFF_TREES (default 200) trees, from VIRTCAP_DIFF_SEED (default:
// time-based, printed on failure).
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <set>

#include "common/sha1.h"
#include "imagecache/pass.h"
#include "imagecache/qcow2_writer.h"
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
    fs::create_directories(dir_.sub("store"));
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
      } else if (chance(20)) {
        run({"qemu-img", "create", "-q", "-f", "vmdk", path, "1M"});
        bases_.push_back({name, "vmdk"});
      } else {
        write_raw(path);
        bases_.push_back({name, "raw"});
      }
    }
    for (const auto& b : bases_)
      testing::set_mtime(instances_ + "/_base/" + b.name, testing::now() - 2 * kDay);
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
      std::vector<std::string> files = testing::qemu_opened_files(disk);
      files.push_back(disk);
      for (const auto& f : files)
        if (auto k = key_of(f); k && base_keys.count(*k)) marked.insert(base_keys.at(*k));
    }
  }

  std::string instances_path() const { return instances_; }
  // A json: backing with colliding keys was made: the pass must then be
  // incomplete and remove nothing.
  bool expect_incomplete() const { return expect_incomplete_; }
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
  const Base& any_base() {
    return bases_[static_cast<std::size_t>(pick(0, static_cast<int>(bases_.size()) - 1))];
  }

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

  const Base& base_of(const std::string& fmt) {
    std::vector<const Base*> of;
    for (const auto& b : bases_)
      if (b.fmt == fmt) of.push_back(&b);
    return of.empty() ? any_base() : *of[static_cast<std::size_t>(pick(0, static_cast<int>(of.size()) - 1))];
  }

  void patch(const std::string& path, std::uint64_t at, std::string_view bytes) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    log_.push_back("patched " + std::to_string(bytes.size()) + " bytes at " + std::to_string(at) + " of " +
                   path);
  }
  static std::string le64(std::uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
    return s;
  }
  // Extent lines naming raw bases (FLAT) and VMDK bases (SPARSE).
  std::string extent_lines(const std::string& from) {
    std::string lines;
    for (int i = pick(1, 3); i > 0; --i) {
      const bool sparse = chance(40);
      const auto& b = base_of(sparse ? "vmdk" : "raw");
      const bool ok = b.fmt == (sparse ? "vmdk" : "raw");
      if (!ok) continue;  // no base of that kind in this tree
      const std::string abs = instances_ + "/_base/" + b.name;
      const std::string n = chance(50) ? abs : fs::relative(abs, from).string();
      lines += sparse ? "RW 2048 SPARSE \"" + n + "\"\n" : "RW 8 FLAT \"" + n + "\" 0\n";
    }
    return lines.empty() ? "RW 8 FLAT \"/nonexistent-extent\" 0\n" : lines;
  }
  static std::string descriptor(const std::string& extents) {
    return "# Disk "
           "DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" +
           extents;
  }

  // Issue 18's shapes; true when one was made at `path`.
  bool make_qemu_rule_entry(const std::string& idir, const std::string& path) {
    const std::string store = dir_.sub("store");
    switch (pick(0, 14)) {
      case 0: {  // the same image reached as raw by one disk and as qcow2 by another
        const auto& b = any_base();
        const std::string q = store + "/q" + std::to_string(serial_++);
        overlay("qcow2", q, instances_ + "/_base/" + b.name, b.fmt);
        overlay("qcow2", path, q, "raw");
        overlay("qcow2", path + "-as-qcow2", q, "qcow2");
        disks_.push_back(path + "-as-qcow2");
        return true;
      }
      case 1: {  // a relative backing reached through two directories
        const std::string real = store + "/real" + std::to_string(serial_++);
        fs::create_directories(real);
        overlay("qcow2", real + "/q", "bl", "raw");
        for (int i = 0; i < 2; ++i) {
          const std::string d = real + "-d" + std::to_string(i);
          fs::create_directories(d);
          fs::create_symlink(real + "/q", d + "/q");
          const auto& b = base_of("raw");
          fs::create_symlink(instances_ + "/_base/" + b.name, d + "/bl");
          log_.push_back("symlinks " + d + "/q -> " + real + "/q, " + d + "/bl -> " + b.name);
          overlay("qcow2", path + (i ? "-via-d1" : ""), d + "/q", "qcow2");
        }
        disks_.push_back(path + "-via-d1");
        return true;
      }
      case 2: {  // a VMDK overlay whose descriptor offset or size is zeroed
        const auto& b = base_of("vmdk");
        if (b.fmt != "vmdk") return false;
        run({"qemu-img", "create", "-q", "-f", "vmdk", "-u", "-F", "vmdk", "-b", spell(b.name, idir, false),
             path, "1M"});
        patch(path, chance(50) ? 28 : 36, le64(0));
        return true;
      }
      case 3: {  // a "KDMV" descriptor holder (capacity 0, embedded descriptor)
        run({"qemu-img", "create", "-q", "-f", "vmdk", path, "1M"});
        patch(path, 12, le64(0));
        patch(path, 28, le64(1));
        std::string d = descriptor(extent_lines(idir));
        d.resize(10240, '\0');
        patch(path, 512, d);
        return true;
      }
      case 4: {  // a text descriptor
        std::ofstream(path) << (chance(50)
                                    ? descriptor(extent_lines(idir))
                                    : "version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n" +
                                          extent_lines(idir));
        log_.push_back("descriptor " + path + ":\n" + testing::read_file(path));
        return true;
      }
      case 5: {                         // json: with colliding keys: QEMU opens one, the pass must not guess
        if (!chance(15)) return false;  // rare: it makes the whole tree's pass incomplete
        const auto& b1 = any_base();
        const auto& b2 = any_base();
        overlay("qcow2", path,
                R"(json:{"file":{"filename":")" + instances_ + "/_base/" + b1.name +
                    R"("},"file.filename":")" + instances_ + "/_base/" + b2.name + R"("})",
                b1.fmt);
        expect_incomplete_ = true;
        return true;
      }
      case 6: {  // a chain of 2-64 images below the disk
        const auto& b = any_base();
        std::string below = instances_ + "/_base/" + b.name, fmt = b.fmt;
        const std::string chain = store + "/chain" + std::to_string(serial_++);
        fs::create_directories(chain);
        for (int i = pick(2, 64) - 1; i > 0; --i) {
          const std::string img = chain + "/" + std::to_string(i);
          // The native writer (checked against qemu-img in qcow2_writer_test):
          // a chain of 64 qemu-img runs would cost a second a tree.
          const std::string b = chance(30) ? fs::relative(below, chain).string() : below;
          log_.push_back("overlay " + img + " -> " + b + " (" + fmt + ")");
          if (!create_overlay(img, OverlaySpec{b, fmt, 1 << 20}, Durability::none).ok())
            throw std::runtime_error("cannot write " + img);
          below = img;
          fmt = "qcow2";
        }
        overlay("qcow2", path, below, fmt);
        return true;
      }
      default: return false;
    }
  }

  void make_entry(const std::string& idir, const std::string& name) {
    const std::string path = idir + "/" + name;
    if (make_qemu_rule_entry(idir, path)) {
      disks_.push_back(path);
      return;
    }
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
  int serial_ = 0;
  bool expect_incomplete_ = false;
};

std::uint64_t env_u64(const char* name, std::uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoull(v) : def;
}

TEST(ImageCacheDifferential, NoBaseThatQemuOpensIsEverRemoved) {
  const std::uint64_t trees = env_u64("VIRTCAP_DIFF_TREES", 200);
  const std::uint64_t seed =
      env_u64("VIRTCAP_DIFF_SEED",
              static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::size_t removed = 0, kept = 0, by_name = 0, incomplete = 0;
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
    const std::string ctx =
        "VIRTCAP_DIFF_SEED=" + std::to_string(seed + t) + " VIRTCAP_DIFF_TREES=1\n" + tree.describe();
    if (tree.expect_incomplete()) {
      ASSERT_FALSE(r.complete) << "a json: backing with colliding keys was followed\n" << ctx;
      ASSERT_EQ(r.files_removed, 0u) << ctx;
      ++incomplete;
    } else {
      ASSERT_TRUE(r.complete) << ctx
                              << (r.unreadable_disks.empty()
                                      ? ""
                                      : r.unreadable_disks[0].path + ": " + r.unreadable_disks[0].error);
    }
    for (const auto& b : tree.base_names()) {
      if (marked.count(b)) {
        ASSERT_TRUE(tree.exists(b)) << "in-use base " << b << " was removed\n" << ctx;
        ++kept;
      } else if (tree.name_matched().count(b)) {
        ASSERT_TRUE(tree.exists(b)) << "name-matched base " << b << " was removed\n" << ctx;
        ++by_name;
      } else if (tree.exists(b) && tree.expect_incomplete()) {
        continue;  // an incomplete pass removes nothing (asserted above)
      } else if (tree.exists(b)) {
        // Kept although QEMU opens no file that is it: only the documented
        // by-name rule may do that (a backing path missing here, e.g. a
        // relative one through a symlinked disk, ending in its name).
        const auto& f = testing::Fixture::file(r, b);
        ASSERT_NE(f.reason.find("does not exist on this host ends in its name"), std::string::npos)
            << "unused old base " << b << " was kept: " << to_string(f.state) << ", " << f.reason << "\n"
            << ctx;
        ++by_name;
      } else {
        ++removed;
      }
    }
    if ((t + 1) % 500 == 0) {  // progress, so a long run's count is known if it is stopped
      std::printf(
          "%llu trees so far: %zu in-use bases kept, %zu kept by name, %zu unused removed, %zu incomplete, "
          "0 in-use lost\n",
          static_cast<unsigned long long>(t + 1), kept, by_name, removed, incomplete);
      std::fflush(stdout);
    }
  }
  spdlog::set_level(level);
  std::printf(
      "%llu trees from seed %llu: %zu in-use bases kept, %zu kept by name, %zu unused removed, %zu trees "
      "incomplete by design (colliding json: keys), 0 in-use lost\n",
      static_cast<unsigned long long>(trees), static_cast<unsigned long long>(seed), kept, by_name, removed,
      incomplete);
}

}  // namespace
}  // namespace virtcap::imagecache
