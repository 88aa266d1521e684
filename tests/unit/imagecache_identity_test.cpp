// Issue 8: a base file is in use by identity, not by spelling. Each finding
// that deleted an in-use base on the old code is a named test here, on real
// files made by qemu-img.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/sha1.h"
#include "config/config.h"
#include "imagecache/backing_spec.h"
#include "imagecache/base_cache.h"
#include "imagecache/pass.h"
#include "support/imagecache_fixture.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::kDay;

// One used base and one unused (old) base; asserts the used one survives.
struct Scenario : Fixture {
  std::string used = sha1_hex("used"), unused = sha1_hex("unused");
  Scenario() {
    make_base(used, 2 * kDay);
    make_base(unused, 2 * kDay);
  }
  void expect_used_kept_unused_removed(const ImageCacheReport& r) const {
    EXPECT_TRUE(r.complete) << (r.unreadable_disks.empty()
                                    ? ""
                                    : r.unreadable_disks[0].path + ": " + r.unreadable_disks[0].error);
    EXPECT_EQ(file(r, used).state, BaseFileState::in_use) << file(r, used).reason;
    EXPECT_EQ(file(r, unused).state, BaseFileState::removed) << file(r, unused).reason;
    EXPECT_EQ(remaining(), std::vector<std::string>{used});
  }
  void expect_nothing_removed(const ImageCacheReport& r) const {
    EXPECT_FALSE(r.complete);
    EXPECT_FALSE(r.unreadable_disks.empty());
    EXPECT_EQ(r.files_removed, 0u);
    auto both = std::vector<std::string>{used, unused};
    std::sort(both.begin(), both.end());
    EXPECT_EQ(remaining(), both);
  }
};

TEST(ImageCacheIdentity, TrailingSlashInInstancesPathIsNormalisedAtConfigLoad) {
  testing::TempDir d("virtcap-cfg");
  fs::create_directories(d.sub("state/instances"));
  auto cfg = config::parse("[DEFAULT]\nstate_path = \"" + d.str() + "/state/\"\ninstances_path = \"" +
                               d.str() + "/state/./x/../instances/\"\n",
                           "t.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  const std::string real = fs::canonical(d.sub("state/instances")).string();
  EXPECT_EQ(cfg->instances_path(), real);
  EXPECT_EQ(cfg->base_dir(), real + "/_base");
  EXPECT_EQ(cfg->defaults.state_path, fs::canonical(d.sub("state")).string());
}

TEST(ImageCacheIdentity, DoubleSlashSpellingOfTheBaseIsTheSameFile) {
  Scenario s;
  s.opts.instances_path += "/";  // the pass itself also copes with a trailing slash
  s.make_disk("u1", "disk", s.opts.instances_path + "/_base/" + s.used);  // ".../instances//_base/<sha>"
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

TEST(ImageCacheIdentity, BackingThroughASymlinkedDirectory) {
  Scenario s;
  const std::string alias = s.dir.sub("alias");
  fs::create_directory_symlink(s.opts.instances_path, alias);
  s.make_disk("u1", "disk", alias + "/_base/" + s.used);
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

TEST(ImageCacheIdentity, DotDotAfterASymlinkResolvesLikeTheKernel) {
  Scenario s;
  // u1/lnk -> _base/sub; "lnk/../<sha>" is _base/<sha> for the kernel (and
  // QEMU), but u1/<sha> for a lexical normalisation.
  fs::create_directories(s.base_dir() + "/sub");
  fs::create_directories(s.opts.instances_path + "/u1");
  fs::create_directory_symlink(s.base_dir() + "/sub", s.opts.instances_path + "/u1/lnk");
  s.make_disk("u1", "disk", "lnk/../" + s.used);
  const auto r = run_pass(s.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(Fixture::file(r, s.used).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, s.unused).state, BaseFileState::removed);
  EXPECT_TRUE(fs::exists(s.base(s.used)));
}

TEST(ImageCacheIdentity, AnotherHostsMountPathProtectsByNameAndIsCounted) {
  Scenario s;
  s.make_disk("u1", "disk", "/mnt/other-host-" + sha1_hex("x").substr(0, 8) + "/instances/_base/" + s.used);
  s.make_disk("u2", "disk", "/nonexistent-" + sha1_hex("y").substr(0, 8) + "/some-other-name");
  const auto r = run_pass(s.opts, {});
  s.expect_used_kept_unused_removed(r);
  EXPECT_EQ(r.name_matches, 1u);
  ASSERT_EQ(r.missing_backings.size(), 1u);
  EXPECT_EQ(r.missing_backings[0].disk, s.opts.instances_path + "/u2/disk");
  EXPECT_NE(Fixture::file(r, s.used).reason.find("another host"), std::string::npos);
}

TEST(ImageCacheIdentity, FileProtocolBacking) {
  Scenario s;
  s.make_disk("u1", "disk", "file:" + s.base(s.used));
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

TEST(ImageCacheIdentity, JsonPseudoProtocolBackings) {
  for (const std::string& form :
       {std::string(R"(json:{"file":{"driver":"file","filename":"%"}})"),
        std::string(R"(json:{"file.driver":"file","file.filename":"%"})"),
        std::string(R"(json:{"driver":"raw","file":{"driver":"file","filename":"%"}})"),
        std::string(R"(json:{"driver":"file","filename":"%"})"),
        std::string(R"(json:{"filename":"file:%"})")}) {
    SCOPED_TRACE(form);
    Scenario s;
    std::string b = form;
    b.replace(b.find('%'), 1, s.base(s.used));
    s.make_disk("u1", "disk", b);
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

TEST(ImageCacheIdentity, UnfollowableBackingsRemoveNothingAndNameTheDisk) {
  for (const std::string& b : {std::string("json:{not json"), std::string("weird:/some/local/path"),
                               std::string(R"(json:{"file":{"driver":"blkdebug","image":"/x"}})"),
                               std::string("file:relative/name")}) {
    SCOPED_TRACE(b);
    Scenario s;
    s.make_disk("u1", "disk", s.base(s.used));
    s.make_disk("u2", "disk", b);
    const auto r = run_pass(s.opts, {});
    s.expect_nothing_removed(r);
    ASSERT_EQ(r.unreadable_disks.size(), 1u);
    EXPECT_EQ(r.unreadable_disks[0].path, s.opts.instances_path + "/u2/disk");
  }
}

TEST(ImageCacheIdentity, RemoteBackingsBlockNothing) {
  Scenario s;
  s.make_disk("u1", "disk", s.base(s.used));
  s.make_disk("u2", "disk", "nbd://192.0.2.1:10809/export");
  s.make_disk("u3", "disk", R"(json:{"driver":"qcow2","file":{"driver":"rbd","pool":"p","image":"i"}})");
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

TEST(ImageCacheIdentity, NonQcow2DisksThatUseABase) {
  for (const std::string& fmt : {std::string("qed"), std::string("qcow")}) {
    SCOPED_TRACE(fmt);
    Scenario s;
    s.make_disk("u1", "disk", s.base(s.used), "raw", fmt);
    s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
  }
}

// Issue 18: a VMDK's parent is followed as QEMU follows it (was: unreadable).
TEST(ImageCacheIdentity, AVmdkWithAParentKeepsItsParent) {
  Scenario s;
  const auto vbase = sha1_hex("vmdk-base");
  testing::must_run({"qemu-img", "create", "-q", "-f", "vmdk", s.base(vbase), "1M"});
  testing::set_mtime(s.base(vbase), testing::now() - 2 * kDay);
  const auto disk = s.make_disk("u1", "disk", s.base(vbase), "vmdk", "vmdk");
  ASSERT_TRUE(testing::qemu_opens(disk, s.base(vbase)));
  const auto r = run_pass(s.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(Fixture::file(r, vbase).state, BaseFileState::in_use);
  EXPECT_EQ(r.files_removed, 2u);
  EXPECT_EQ(s.remaining(), std::vector<std::string>{vbase});
}

TEST(ImageCacheIdentity, SymlinkAndHardLinkDisksToABase) {
  Scenario s;
  const auto other = sha1_hex("other");
  s.make_base(other, 2 * kDay);
  fs::create_directories(s.opts.instances_path + "/u1");
  fs::create_symlink(s.base(s.used), s.opts.instances_path + "/u1/disk");
  fs::create_directories(s.opts.instances_path + "/u2");
  fs::create_hard_link(s.base(other), s.opts.instances_path + "/u2/disk");
  const auto r = run_pass(s.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(Fixture::file(r, s.used).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, other).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, s.unused).state, BaseFileState::removed);
}

TEST(ImageCacheIdentity, DisksInSubdirectoriesCountAndTooDeepIsIncomplete) {
  Scenario s;
  fs::create_directories(s.opts.instances_path + "/u1/a/b");
  s.make_disk("u1/a/b", "disk", s.base(s.used));
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));

  Scenario deep;
  fs::create_directories(deep.opts.instances_path + "/u1/a/b/c/d");
  const auto r = run_pass(deep.opts, {});
  deep.expect_nothing_removed(r);
}

TEST(ImageCacheIdentity, ManyInstanceDirectoriesAreScannedOnSeveralThreads) {
  Scenario s;
  std::vector<std::string> more;
  for (int i = 0; i < 3; ++i) more.push_back(s.make_base(sha1_hex("more" + std::to_string(i)), 2 * kDay));
  for (int i = 0; i < 300; ++i) {  // above the parallel threshold
    const std::string idir = s.opts.instances_path + "/inst-" + std::to_string(i);
    fs::create_directories(idir);
    if (i == 299)
      s.make_disk("inst-" + std::to_string(i), "disk", s.base(s.used));
    else if (i % 100 == 7)
      fs::create_symlink(more[static_cast<std::size_t>(i / 100)], idir + "/disk");
    else
      std::ofstream(idir + "/console.log") << "x";
  }
  const auto r = run_pass(s.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.instance_dirs, 300u);
  EXPECT_EQ(r.disks_read, 300u);
  EXPECT_EQ(Fixture::file(r, s.used).state, BaseFileState::in_use);
  for (const auto& m : more)
    EXPECT_EQ(Fixture::file(r, fs::path(m).filename().string()).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, s.unused).state, BaseFileState::removed);
}

// Issue 10, mutant 4: an open error other than ENOENT (here ELOOP from a
// symlink loop) must make the pass remove nothing.
TEST(ImageCacheIdentity, ASymlinkLoopDiskOrDirectoryRemovesNothing) {
  for (const std::string& where : {std::string("u1/disk"), std::string("u1")}) {
    SCOPED_TRACE(where);
    Scenario s;
    fs::create_directories(s.opts.instances_path + "/u1");
    const std::string p = s.opts.instances_path + "/" + where;
    if (where == "u1") fs::remove(p);
    fs::create_symlink(p + ".loop", p);
    fs::create_symlink(p, p + ".loop");
    s.expect_nothing_removed(run_pass(s.opts, {}));
  }
}

// Issue 10, mutant 5: an in-use base whose own header cannot be read must not
// let the base under it lose protection.
TEST(ImageCacheIdentity, AnInUseBaseWithAnUnreadableHeaderProtectsEverything) {
  Scenario s;
  const auto upper = sha1_hex("upper");
  testing::must_run(
      {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", s.base(s.used), s.base(upper)});
  s.make_disk("u1", "disk", s.base(upper), "qcow2");
  // Truncate the upper base inside its header: qcow2 magic, nothing more.
  ASSERT_EQ(::truncate(s.base(upper).c_str(), 20), 0);
  testing::set_mtime(s.base(upper), testing::now() - 2 * kDay);
  const auto r = run_pass(s.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_EQ(s.remaining().size(), 3u);
}

TEST(ImageCacheIdentity, FifosAndSocketsAreNeverOpened) {
  Scenario s;
  s.make_disk("u1", "disk", s.base(s.used));
  ASSERT_EQ(::mkfifo((s.opts.instances_path + "/u1/console.fifo").c_str(), 0600), 0);
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));  // returns: the FIFO was not opened for reading
}

TEST(ImageCacheIdentity, ExternalDataFileIsAFileTheDiskOpens) {
  Scenario s;
  const std::string disk = s.opts.instances_path + "/u1/disk";
  fs::create_directories(s.opts.instances_path + "/u1");
  testing::must_run(
      {"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + s.base(s.used), disk, "64K"});
  testing::set_mtime(s.base(s.used), testing::now() - 2 * kDay);
  s.expect_used_kept_unused_removed(run_pass(s.opts, {}));
}

TEST(ImageCacheIdentity, ATemporaryIsRemovedOnlyUnderItsBasesLock) {
  Fixture f;
  const auto b = sha1_hex("fetching");
  f.make_base(b + ".tmp-abc0123456", 2 * kDay);
  BaseCache cache(f.opts.instances_path, "_base");
  auto held = BaseFileLock::acquire(cache, b);  // a fetch of <b> in progress
  ASSERT_TRUE(held.ok());
  f.opts.lock_timeout_seconds = 1;
  const auto r = run_pass(f.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_EQ(f.remaining(), std::vector<std::string>{b + ".tmp-abc0123456"});
  EXPECT_EQ(fs::exists(f.opts.instances_path + "/locks/" + b + ".tmp-abc0123456.lock"), false);
}

TEST(ImageCacheIdentity, LockFilesAreNotFollowedAndStaleOnesAreCleanedUp) {
  Fixture f;
  const auto gone = sha1_hex("gone"), kept = sha1_hex("kept"), evil = sha1_hex("evil");
  f.make_base(kept, 60);
  BaseCache cache(f.opts.instances_path, "_base");
  ASSERT_TRUE(BaseFileLock::acquire(cache, gone).ok());
  ASSERT_TRUE(BaseFileLock::acquire(cache, kept).ok());
  const std::string victim = f.dir.write("victim", "precious");
  fs::create_symlink(victim, cache.lock_path(evil));
  auto l = BaseFileLock::acquire(cache, evil);
  EXPECT_FALSE(l.ok());  // O_NOFOLLOW: a planted symlink is refused
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_FALSE(fs::exists(cache.lock_path(gone)));
  EXPECT_TRUE(fs::exists(cache.lock_path(kept)));
  EXPECT_EQ(testing::read_file(victim), "precious");
}

TEST(ImageCacheIdentity, NonUtf8NamesAreEscapedInJsonAndRemovalsAreLoggedFirst) {
  Fixture f;
  const std::string odd = "\xff\xfe-notes";
  f.make_base(odd, 2 * kDay);
  const auto old = sha1_hex("old");
  f.make_base(old, 2 * kDay);
  std::ostringstream log;
  auto logger = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  auto prev = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  const auto r = run_pass(f.opts, {});
  spdlog::set_default_logger(prev);
  const std::string dumped = to_json(r).dump();  // must not throw
  EXPECT_NE(dumped.find("\xEF\xBF\xBD\xEF\xBF\xBD-notes"), std::string::npos);
  EXPECT_NE(log.str().find("removing " + f.base(old)), std::string::npos);
  EXPECT_EQ(r.files_removed, 1u);
}

TEST(BackingSpec, ClassifiesLikeQemu) {
  using K = BackingTarget::Kind;
  EXPECT_EQ(classify_backing("../_base/x", "/i/u1").path, "/i/u1/../_base/x");  // left for the kernel
  EXPECT_EQ(classify_backing("/abs", "/i/u1").path, "/abs");
  EXPECT_EQ(classify_backing("file:/abs", "/i").path, "/abs");
  EXPECT_EQ(classify_backing("file:rel", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing("https://h/x", "/i").kind, K::remote);
  EXPECT_EQ(classify_backing("gluster+tcp://h/v/x", "/i").kind, K::remote);
  EXPECT_EQ(classify_backing("unknownproto:/x", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"file.filename":"/a"})", "/i").path, "/a");
  EXPECT_EQ(classify_backing(R"(json:{"driver":"qcow2","file.filename":"/a"})", "/i").format, "qcow2");
  EXPECT_EQ(classify_backing(R"(json:{"file.filename":"rel"})", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"filename":"/a","backing":null})", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"driver":"nbd","server":{"type":"inet"}})", "/i").kind, K::remote);
  EXPECT_EQ(classify_backing(R"(json:[1])", "/i").kind, K::unreadable);
  EXPECT_EQ(classify_backing(R"(json:{"file":"node0"})", "/i").kind, K::unreadable);
}

}  // namespace
}  // namespace virtcap::imagecache
