// Issue 18: a base is in use when QEMU would open it for some disk. One test
// per way the previous pass lost an in-use base (or deleted a file that was
// not its own), each with `qemu-img info --backing-chain` as the oracle: a
// crafted image counts only when QEMU really opens the file.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/sha1.h"
#include "imagecache/backing_spec.h"
#include "imagecache/base_cache.h"
#include "imagecache/pass.h"
#include "imagecache/vmdk.h"
#include "support/imagecache_fixture.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::kDay;
using testing::must_run;
using testing::qemu_opens;

void write_at(const std::string& path, std::uint64_t offset, std::string_view bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << path;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good());
}
std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
  return s;
}

struct Rules : Fixture {
  std::string used = sha1_hex("used"), unused = sha1_hex("unused");
  Rules() {
    make_base(used, 2 * kDay);
    make_base(unused, 2 * kDay);
  }
  std::string disk_path(const std::string& uuid, const std::string& name = "disk") const {
    fs::create_directories(opts.instances_path + "/" + uuid);
    return opts.instances_path + "/" + uuid + "/" + name;
  }
  // A VMDK base (QEMU opens a VMDK parent as VMDK).
  void make_vmdk_base(const std::string& name) const {
    fs::remove(base(name));
    must_run({"qemu-img", "create", "-q", "-f", "vmdk", base(name), "1M"});
    testing::set_mtime(base(name), testing::now() - 2 * kDay);
  }
  std::string why(const ImageCacheReport& r) const {
    return r.unreadable_disks.empty() ? "" : r.unreadable_disks[0].path + ": " + r.unreadable_disks[0].error;
  }
  void expect_used_kept_unused_removed(const ImageCacheReport& r) const {
    EXPECT_TRUE(r.complete) << why(r);
    EXPECT_EQ(file(r, used).state, BaseFileState::in_use) << file(r, used).reason;
    EXPECT_EQ(file(r, unused).state, BaseFileState::removed) << file(r, unused).reason;
    EXPECT_EQ(remaining(), std::vector<std::string>{used});
  }
  // Every base in `in_use` kept as in use (besides `used`), `unused` removed.
  void expect_in_use(const ImageCacheReport& r, const std::vector<std::string>& in_use) const {
    EXPECT_TRUE(r.complete) << why(r);
    for (const auto& b : in_use)
      EXPECT_EQ(file(r, b).state, BaseFileState::in_use) << b << ": " << file(r, b).reason;
    EXPECT_EQ(file(r, unused).state, BaseFileState::removed) << file(r, unused).reason;
  }
  void expect_nothing_removed(const ImageCacheReport& r) const {
    EXPECT_FALSE(r.complete);
    EXPECT_EQ(r.files_removed, 0u);
    auto both = std::vector<std::string>{used, unused};
    std::sort(both.begin(), both.end());
    EXPECT_EQ(remaining(), both);
  }
};

// Class 1: the chain memo keyed an image by inode alone. One disk opens Q
// as raw, another opens the same Q as qcow2, and Q's own backing is the
// base. Both listing orders are played (the roles of u1 and u2 swapped).
TEST(ImageCacheQemuRules, TheSameImageOpenedAsRawAndAsQcow2) {
  for (const bool raw_first : {true, false}) {
    SCOPED_TRACE(raw_first ? "u1 opens it as raw" : "u2 opens it as raw");
    Rules s;
    const std::string q = s.dir.sub("store/q.qcow2");
    fs::create_directories(s.dir.sub("store"));
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", s.base(s.used), q});
    const std::string as_raw = s.disk_path(raw_first ? "u1" : "u2"),
                      as_qcow2 = s.disk_path(raw_first ? "u2" : "u1");
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", q, as_raw});
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", q, as_qcow2});
    ASSERT_TRUE(qemu_opens(as_qcow2, s.base(s.used)));
    ASSERT_FALSE(qemu_opens(as_raw, s.base(s.used)));
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

// Class 1, the format part of the key: the same qcow2 image Q declared vmdk
// by one disk (QEMU reads it as a VMDK descriptor: no parent, no extents)
// and probed as qcow2 by another, whose chain reaches the base through Q.
TEST(ImageCacheQemuRules, TheSameImageOpenedAsVmdkAndAsQcow2) {
  for (const bool vmdk_first : {true, false}) {
    SCOPED_TRACE(vmdk_first ? "u1 declares it vmdk" : "u2 declares it vmdk");
    Rules s;
    const std::string q = s.dir.sub("store/q.qcow2");
    fs::create_directories(s.dir.sub("store"));
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", s.base(s.used), q});
    const std::string as_vmdk = s.disk_path(vmdk_first ? "u1" : "u2"),
                      as_qcow2 = s.disk_path(vmdk_first ? "u2" : "u1");
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "vmdk", "-b", q, as_vmdk, "64K"});
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", q, as_qcow2});
    ASSERT_TRUE(qemu_opens(as_qcow2, s.base(s.used)));
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

// Class 1: a qcow2 with a relative backing, reached through two directories
// (two symlinks to one file): QEMU resolves the backing against the
// directory it opened the image through, so each disk uses another base.
TEST(ImageCacheQemuRules, ARelativeBackingReachedThroughTwoDirectories) {
  Rules s;
  const std::string other = sha1_hex("other");
  s.make_base(other, 2 * kDay);
  const std::string store = s.dir.sub("store");
  fs::create_directories(store + "/real");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "base-link",
            store + "/real/q.qcow2", "64K"});
  for (const auto& [d, b] : {std::pair{std::string("d1"), s.used}, std::pair{std::string("d2"), other}}) {
    fs::create_directories(store + "/" + d);
    fs::create_symlink("../real/q.qcow2", store + "/" + d + "/q.qcow2");
    fs::create_symlink(s.base(b), store + "/" + d + "/base-link");
  }
  const std::string u1 = s.disk_path("u1"), u2 = s.disk_path("u2");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", store + "/d1/q.qcow2", u1,
            "64K"});
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", store + "/d2/q.qcow2", u2,
            "64K"});
  ASSERT_TRUE(qemu_opens(u1, s.base(s.used)));
  ASSERT_TRUE(qemu_opens(u2, s.base(other)));
  s.expect_in_use(run_pass(s.opts, {}), {s.used, other});
}

// Class 2: QEMU reads a sparse VMDK's parent hint at byte 512 whatever the
// header's descriptor offset and size say.
TEST(ImageCacheQemuRules, AVmdkWithAZeroedDescriptorOffsetOrSizeStillOpensItsParent) {
  for (const std::uint64_t field : {28u, 36u}) {
    SCOPED_TRACE(field == 28 ? "descriptor offset 0" : "descriptor size 0");
    Rules s;
    s.make_vmdk_base(s.used);
    const std::string disk = s.disk_path("u1");
    must_run({"qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", s.base(s.used), disk});
    write_at(disk, field, le64(0));
    ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

// Class 2: a "KDMV" file with capacity 0 and an embedded descriptor is a
// descriptor file; its FLAT and SPARSE extents are files QEMU opens.
TEST(ImageCacheQemuRules, AKdmvWithCapacity0IsADescriptorWhoseExtentsAreOpened) {
  Rules s;
  const std::string sparse_base = sha1_hex("sparse-extent");
  s.make_vmdk_base(sparse_base);
  const std::string disk = s.disk_path("u1");
  must_run({"qemu-img", "create", "-q", "-f", "vmdk", disk, "1M"});
  write_at(disk, 12, le64(0));  // capacity
  write_at(disk, 28, le64(1));  // descriptor at sector 1
  const std::string rel = fs::relative(s.base(s.used), fs::path(disk).parent_path()).string();
  std::string desc =
      "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
      "createType=\"monolithicFlat\"\nRW 128 FLAT \"" +
      rel + "\" 0\nRW 2048 SPARSE \"" + s.base(sparse_base) + "\"\n";
  desc.resize(vmdk::kParentHintWindow, '\0');
  write_at(disk, 512, desc);
  ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
  ASSERT_TRUE(qemu_opens(disk, s.base(sparse_base)));
  s.expect_in_use(run_pass(s.opts, {}), {s.used, sparse_base});
}

// Class 2: text descriptors are probed as QEMU probes them ("version=N"
// after comment and blank lines) - with or without the usual header comment.
TEST(ImageCacheQemuRules, ATextDescriptorIsReadAsQemuProbesIt) {
  for (const std::string& head :
       {std::string("version=1\n"), std::string("# Disk DescriptorFile\n   \nversion=1\n")}) {
    SCOPED_TRACE(head);
    Rules s;
    const std::string disk = s.disk_path("u1", "disk.vmdk");
    std::ofstream(disk) << head << "CID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                        << "RW 128 FLAT \"" << s.base(s.used) << "\" 0\n";
    ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

// A sparse extent that holds a descriptor of its own names more files:
// not followed, so the pass removes nothing.
TEST(ImageCacheQemuRules, AnExtentHoldingItsOwnDescriptorIsUnreadable) {
  Rules s;
  const std::string nested = s.dir.sub("nested.vmdk");
  must_run({"qemu-img", "create", "-q", "-f", "vmdk", nested, "1M"});
  write_at(nested, 12, le64(0));
  write_at(nested, 28, le64(1));
  const std::string disk = s.disk_path("u1", "disk.vmdk");
  std::ofstream(disk) << "version=1\ncreateType=\"vmfs\"\nRW 2048 SPARSE \"" << nested << "\"\n";
  const auto r = run_pass(s.opts, {});
  s.expect_nothing_removed(r);
  ASSERT_FALSE(r.unreadable_disks.empty());
  EXPECT_NE(r.unreadable_disks[0].error.find("descriptor of its own"), std::string::npos) << s.why(r);
}

// Class 3: a json: backing naming one file nested and another dotted. QEMU
// 7.2 opens the nested one; the pass never guesses: unreadable.
TEST(ImageCacheQemuRules, JsonWithCollidingKeysIsUnreadable) {
  Rules s;
  const std::string disk = s.disk_path("u1");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
            R"(json:{"file":{"filename":")" + s.base(s.used) + R"("},"file.filename":")" + s.base(s.unused) +
                R"("})",
            disk, "64K"});
  ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
  s.expect_nothing_removed(run_pass(s.opts, {}));
  using K = BackingTarget::Kind;
  EXPECT_EQ(classify_backing(R"(json:{"file.filename":"/a","file.filename":"/b"})", "/i").kind,
            K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"filename":"/a","file.filename":"/b"})", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"file":{"filename":"/a\u0000x"}})", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"file":{"filename":"/a"},"driver":"raw"})", "/i").path, "/a");
}

// Class 4: a file in an instance directory is a disk whatever its name.
TEST(ImageCacheQemuRules, ADiskWithATemporaryLookingNameIsADisk) {
  Rules s;
  const std::string disk = s.disk_path("u1", "disk.tmp-restore.qcow2");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", s.base(s.used), disk});
  ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

// Over-caution: a chain of 20 images (deeper than the old limit of 16) is
// followed to its base, and the unused base is still removed.
TEST(ImageCacheQemuRules, AChainOf20ImagesIsFollowed) {
  Rules s;
  std::string below = s.base(s.used), fmt = "raw";
  fs::create_directories(s.dir.sub("chain"));
  for (int i = 0; i < 19; ++i) {
    const std::string img = s.dir.sub("chain/img" + std::to_string(i));
    must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", fmt, "-b", below, img, "64K"});
    below = img;
    fmt = "qcow2";
  }
  const std::string disk = s.disk_path("u1");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", fmt, "-b", below, disk, "64K"});
  ASSERT_TRUE(qemu_opens(disk, s.base(s.used)));
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

// Class 5: the lock directory (and the base directory) must be real
// directories on the cache's own mount: a symlink is refused, and nothing
// outside the cache is touched.
TEST(ImageCacheQemuRules, ASymlinkedLockDirectoryIsRefusedAndNothingOutsideIsTouched) {
  Rules s;
  const std::string foreign = s.dir.sub("foreign");
  fs::create_directories(foreign);
  const std::string app = s.dir.write("foreign/app.lock", "pid 42");
  const std::string stale = s.dir.write("foreign/" + sha1_hex("gone") + ".lock", "");
  fs::create_directory_symlink(foreign, s.opts.instances_path + "/locks");
  const auto r = run_pass(s.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_EQ(Fixture::file(r, s.unused).state, BaseFileState::removable);
  EXPECT_TRUE(fs::exists(app));
  EXPECT_TRUE(fs::exists(stale));
  EXPECT_EQ(fs::directory_iterator(foreign) == fs::directory_iterator(), false);
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(foreign)) ++n;
  EXPECT_EQ(n, 2u);  // no lock file was created there either
  bool named = false;
  for (const auto& note : r.notes)
    named |= note.find("refusing " + s.opts.instances_path + "/locks") != std::string::npos;
  EXPECT_TRUE(named);
  // Spawn's lock is refused the same way.
  BaseCache cache(s.opts.instances_path, "_base");
  EXPECT_FALSE(BaseFileLock::acquire(cache, s.used).ok());
}

TEST(ImageCacheQemuRules, ASymlinkedBaseDirectoryIsRefused) {
  Fixture f;
  const std::string elsewhere = f.dir.sub("elsewhere");
  fs::create_directories(elsewhere);
  const std::string victim = elsewhere + "/" + sha1_hex("victim");
  std::ofstream(victim) << "precious";
  testing::set_mtime(victim, testing::now() - 2 * kDay);
  fs::remove_all(f.base_dir());
  fs::create_directory_symlink(elsewhere, f.base_dir());
  const auto r = run_pass(f.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_TRUE(fs::exists(victim));
}

// A bind mount over the lock directory (same device, other mount) and a
// stale lock file of the cache's own pattern there: refused, kept.
TEST(ImageCacheQemuRules, ABindMountedLockDirectoryIsRefused) {
  Fixture f;
  const std::string foreign = f.dir.sub("foreign"), locks = f.opts.instances_path + "/locks";
  fs::create_directories(foreign);
  fs::create_directories(locks);
  const std::string stale = f.dir.write("foreign/" + sha1_hex("gone") + ".lock", "");
  const std::string old = sha1_hex("old");
  f.make_base(old, 2 * kDay);
  if (::mount(foreign.c_str(), locks.c_str(), nullptr, MS_BIND, nullptr) != 0)
    GTEST_SKIP() << "cannot bind-mount here: " << std::strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{locks};
  const auto r = run_pass(f.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_TRUE(fs::exists(f.base(old)));
  EXPECT_TRUE(fs::exists(stale));
  bool named = false;
  for (const auto& note : r.notes) named |= note.find("bind mount or another device") != std::string::npos;
  EXPECT_TRUE(named);
}

TEST(Vmdk, ExtentLinesAreReadAsQemuScansThem) {
  const auto e = vmdk::extents(
      "RW 10 FLAT \"a\" 0\n  RW  5  SPARSE  \"b c\"\nRDONLY 1 FLAT \"ro\" 0\n"
      "RWX 1 FLAT \"x\" 0\nRW 1 FLATTENEDXX \"y\"\nRW 1 ZERO \"z\"\nRW one FLAT \"n\"\n"
      "RW 1 VMFS \"v\"\nRW 1 FLAT \"\" 0\nRW 1 FLAT \"q\nr\" 0\0RW 1 FLAT \"after-nul\" 0");
  std::vector<std::string> names;
  for (const auto& x : e) names.push_back(x.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b c", "z", "v", "q"}));
  EXPECT_EQ(e[0].kind, vmdk::ExtentKind::flat);
  EXPECT_EQ(e[1].kind, vmdk::ExtentKind::sparse);
  EXPECT_EQ(e[2].kind, vmdk::ExtentKind::other);
  EXPECT_EQ(vmdk::extents("RW 1 FLAT \"" + std::string(600, 'n') + "\" 0")[0].name.size(), 511u);
}

TEST(Vmdk, ParentHintAndProbeFollowQemu) {
  auto bytes = [](std::string_view s) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(vmdk::parent_hint(bytes("x\nparentFileNameHint=\"/p/q\"\n")).name, "/p/q");
  EXPECT_EQ(vmdk::parent_hint(bytes("parentFileNameHint = \"/p\"")).name, " ");  // QEMU skips two characters
  EXPECT_EQ(vmdk::parent_hint(bytes("parentFileNameHint=\"\"")).kind, vmdk::ParentHint::Kind::none);
  EXPECT_EQ(vmdk::parent_hint(bytes("parentFileNameHint=\"/open")).kind, vmdk::ParentHint::Kind::malformed);
  EXPECT_EQ(vmdk::parent_hint(bytes(std::string_view("\0parentFileNameHint=\"/p\"", 24))).kind,
            vmdk::ParentHint::Kind::none);
  EXPECT_TRUE(vmdk::probes_as_text_descriptor(bytes("# c\n  \r\nversion=2\r\n")));
  EXPECT_FALSE(vmdk::probes_as_text_descriptor(bytes("x\nversion=1\n")));
  EXPECT_FALSE(vmdk::probes_as_text_descriptor(bytes("version=4\n")));
}

}  // namespace
}  // namespace virtcap::imagecache
