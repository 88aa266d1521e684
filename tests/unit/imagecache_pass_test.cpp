// The image-cache pass on real files: base images and qcow2 overlays made by
// qemu-img, real mtimes, real locks.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "common/sha1.h"
#include "compute/manager.h"
#include "imagecache/base_cache.h"
#include "imagecache/host_registry.h"
#include "imagecache/pass.h"
#include "imagecache/qcow2.h"
#include "store/memory/memory_store.h"
#include "support/imagecache_fixture.h"
#include "support/test_support.h"
#include "virt/libvirt/libvirt_driver.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::kDay;
using testing::kHour;
using testing::now;
using testing::TempDir;

TEST(ImageCachePass, RemovesExactlyTheUnusedOldEnoughFiles) {
  Fixture f;
  const auto used = sha1_hex("used"), old_unused = sha1_hex("old"), young = sha1_hex("young");
  const auto store_img = sha1_hex("in-store");
  f.make_base(used, 2 * kDay);
  f.make_base(old_unused, 2 * kDay);
  f.make_base(young, kHour);
  f.make_base(used + "_10737418240", 2 * kHour);        // resized, used via disk.local
  f.make_base(old_unused + "_21474836480", 2 * kHour);  // resized, unused, old enough
  f.make_base(young + "_1073741824", 10 * 60);          // resized, unused, young
  f.make_base(store_img + "_5368709120", 2 * kDay);     // resized of an image the store says is live
  f.make_base(store_img, 2 * kDay);                     // original of it
  f.make_base("swap_512", 2 * kDay);                    // names this driver never makes: unknown, kept
  f.make_base("ephemeral_20_40d1d2c", 2 * kDay);
  f.dir.write("instances/_base/README", "operator notes");
  f.make_base(old_unused + ".tmp-abcdef0123", 2 * kDay);  // interrupted fetch
  f.make_base(young + ".tmp-1234567890", 60);             // fetch in progress
  f.make_disk("uuid-1", "disk", f.base(used));
  f.make_disk("uuid-1", "disk.local", f.base(used + "_10737418240"));
  f.make_disk("uuid-1", "disk.swap", f.base(used));
  f.dir.write("instances/uuid-1/console.log", "boot log");
  f.dir.write("instances/uuid-1/disk.config", std::string(4096, '\0'));  // a raw config drive

  InstanceRecord live;
  live.uuid = "uuid-2";
  live.image_id = "in-store";
  const auto r = run_pass(f.opts, {live});

  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.disks_read, 5u);  // disk, disk.local, disk.swap, console.log, disk.config
  EXPECT_EQ(r.files_removed, 3u);
  EXPECT_EQ(Fixture::file(r, used).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, used + "_10737418240").state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, store_img).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, store_img + "_5368709120").state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, old_unused).state, BaseFileState::removed);
  EXPECT_EQ(Fixture::file(r, old_unused + "_21474836480").state, BaseFileState::removed);
  EXPECT_EQ(Fixture::file(r, old_unused + ".tmp-abcdef0123").state, BaseFileState::removed);
  EXPECT_EQ(Fixture::file(r, young).state, BaseFileState::unused_young);
  EXPECT_EQ(Fixture::file(r, young).threshold_seconds, 86400);
  EXPECT_EQ(Fixture::file(r, young + "_1073741824").state, BaseFileState::unused_young);
  EXPECT_EQ(Fixture::file(r, young + "_1073741824").threshold_seconds, 3600);
  EXPECT_EQ(Fixture::file(r, young + ".tmp-1234567890").state, BaseFileState::unused_young);
  EXPECT_EQ(Fixture::file(r, "swap_512").state, BaseFileState::unknown);
  EXPECT_EQ(Fixture::file(r, "README").kind, BaseFileKind::unknown);
  const std::vector<std::string> expect = {"README",
                                           "ephemeral_20_40d1d2c",
                                           young + "_1073741824",
                                           young,
                                           young + ".tmp-1234567890",
                                           store_img,
                                           store_img + "_5368709120",
                                           "swap_512",
                                           used,
                                           used + "_10737418240"};
  auto sorted = expect;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(f.remaining(), sorted);
  // In-use files were touched.
  EXPECT_GT(testing::mtime_ns(f.base(used)), (now() - 60) * 1000000000LL);
  const auto j = to_json(r);
  EXPECT_EQ(j.at("counts").at("removed"), 3);
  EXPECT_EQ(j.at("bytes_freed"), 3 * 65536);
}

TEST(ImageCachePass, ConfigOffAndDryRunOnlyReport) {
  for (bool dry : {false, true}) {
    Fixture f;
    const auto unused = sha1_hex("unused"), used = sha1_hex("used");
    f.make_base(unused, 2 * kDay);
    f.make_base(used, 2 * kDay);
    f.make_disk("u", "disk", f.base(used));
    const auto mtime_before = testing::mtime_ns(f.base(used));
    f.opts.remove_unused = dry;  // dry run with removal on; config off without dry run
    f.opts.dry_run = dry;
    const auto r = run_pass(f.opts, {});
    EXPECT_TRUE(r.complete);
    EXPECT_EQ(r.files_removed, 0u);
    EXPECT_EQ(Fixture::file(r, unused).state, BaseFileState::removable);
    EXPECT_NE(Fixture::file(r, unused).reason.find(dry ? "dry run" : "remove_unused_base_images = false"),
              std::string::npos);
    EXPECT_EQ(f.remaining().size(), 2u);
    if (dry) {
      EXPECT_EQ(testing::mtime_ns(f.base(used)), mtime_before) << "a dry run changes nothing";
    }
  }
}

// The agent's stop ends a pass between its steps, removing nothing: asked
// before the pass (it stops before reading the disks), or while it runs (the
// seam after the first look: it stops after the second look, locks held).
TEST(ImageCachePass, AStopEndsThePassBetweenStepsRemovingNothing) {
  for (const bool during : {false, true}) {
    Fixture f;
    const auto unused = sha1_hex("unused");
    f.make_base(unused, 2 * kDay);
    std::stop_source stop;
    f.opts.stop = stop.get_token();
    if (during)
      f.opts.after_first_look = [&stop] { stop.request_stop(); };
    else
      stop.request_stop();
    const auto r = run_pass(f.opts, {});
    EXPECT_FALSE(r.complete);
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.files_removed, 0u);
    EXPECT_EQ(f.remaining().size(), 1u);
    ASSERT_FALSE(r.notes.empty());
    EXPECT_NE(
        r.notes.back().find(during ? "stopped after the second look" : "stopped before reading the disks"),
        std::string::npos)
        << r.notes.back();
    if (during) {
      EXPECT_EQ(Fixture::file(r, unused).state, BaseFileState::removable);
      EXPECT_NE(Fixture::file(r, unused).reason.find("not removed: the agent is stopping"),
                std::string::npos);
    } else {
      EXPECT_EQ(r.disks_read, 0u);
    }
  }
  // Without a stop the same tree loses its unused base: the stop made the difference.
  Fixture f;
  f.make_base(sha1_hex("unused"), 2 * kDay);
  EXPECT_EQ(run_pass(f.opts, {}).files_removed, 1u);
}

TEST(ImageCachePass, MissingBaseDirectoryIsNothingToDo) {
  Fixture f;
  fs::remove_all(f.base_dir());
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_TRUE(r.files.empty());
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("no base directory"), std::string::npos);
}

TEST(ImageCachePass, ACorruptDiskMakesItRemoveNothing) {
  Fixture f;
  const auto unused = sha1_hex("unused");
  f.make_base(unused, 2 * kDay);
  const auto good = f.make_disk("u1", "disk", f.base(unused));
  fs::remove(good);  // u1's disk is gone; make a corrupt one elsewhere
  f.dir.write("instances/u2/disk",
              testing::read_file(f.make_disk("u3", "disk", f.base(unused))).substr(0, 40));
  fs::remove_all(f.opts.instances_path + "/u3");
  const auto r = run_pass(f.opts, {});
  EXPECT_FALSE(r.complete);
  ASSERT_EQ(r.unreadable_disks.size(), 1u);
  EXPECT_EQ(r.unreadable_disks[0].path, f.opts.instances_path + "/u2/disk");
  EXPECT_EQ(r.files_removed, 0u);
  EXPECT_EQ(Fixture::file(r, unused).state, BaseFileState::removable);
  EXPECT_NE(Fixture::file(r, unused).reason.find("could not be read"), std::string::npos);
  EXPECT_EQ(f.remaining(), std::vector<std::string>{unused});
  EXPECT_NE(to_table(r).find("PASS INCOMPLETE"), std::string::npos);
}

TEST(ImageCachePass, ADiskVanishingDuringTheScanIsNotAnError) {
  Fixture f;
  const auto b = sha1_hex("b");
  f.make_base(b, 2 * kDay);
  fs::create_directories(f.opts.instances_path + "/gone");
  fs::create_symlink(f.opts.instances_path + "/gone/deleted-disk", f.opts.instances_path + "/gone/disk");
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.files_removed, 1u);
}

TEST(ImageCachePass, BackingChainsAndRelativePathsProtectEveryLink) {
  Fixture f;
  const auto lower = sha1_hex("lower"), upper = sha1_hex("upper"), rel = sha1_hex("relative");
  f.make_base(lower, 2 * kDay);
  // A base that is itself an overlay on another base file.
  testing::must_run(
      {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", f.base(lower), f.base(upper)});
  testing::set_mtime(f.base(upper), now() - 2 * kDay);
  // disk -> disk.snap (in the instance dir) -> upper -> lower
  const auto snap = f.make_disk("u1", "disk.snap", f.base(upper), "qcow2");
  f.make_disk("u1", "disk", snap, "qcow2");
  // A relative backing path, as written by some tools.
  f.make_base(rel, 2 * kDay);
  f.make_disk("u2", "disk", "../_base/" + rel);
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete) << (r.unreadable_disks.empty() ? "" : r.unreadable_disks[0].error);
  EXPECT_EQ(Fixture::file(r, lower).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, upper).state, BaseFileState::in_use);
  EXPECT_EQ(Fixture::file(r, rel).state, BaseFileState::in_use);
  EXPECT_EQ(r.files_removed, 0u);
}

TEST(ImageCachePass, ABackingLoopIsUnreadableAndRemovesNothing) {
  Fixture f;
  const auto unused = sha1_hex("unused");
  f.make_base(unused, 2 * kDay);
  const auto a = f.make_disk("u1", "a", "b", "qcow2");
  f.make_disk("u1", "b", "a", "qcow2");
  const auto r = run_pass(f.opts, {});
  EXPECT_FALSE(r.complete);
  EXPECT_FALSE(r.unreadable_disks.empty());
  EXPECT_EQ(f.remaining(), std::vector<std::string>{unused});
}

// A second host's instance protects its base image while that host is down
// and unregistered: its disk on the shared storage is proof enough. And a
// registered host's live instances (from the store) protect theirs even
// without a disk.
TEST(ImageCachePass, TwoHostsOnOneInstancesPath) {
  TempDir dir("virtcap-twohosts");
  const std::string shared = dir.sub("shared-instances");
  auto make_cfg = [&](const std::string& host) {
    config::Config c;
    c.defaults.state_path = dir.sub(host);
    c.defaults.instances_path = shared;
    c.defaults.host = host;
    c.libvirt.uri = "test://" + testing::write_test_node(dir, host + ".xml");
    c.image_cache.remove_unused_original_minimum_age_seconds = 0;
    fs::create_directories(c.images_path());
    testing::make_raw_image(c.images_path() + "/img-a.raw");
    testing::make_raw_image(c.images_path() + "/img-b.raw");
    testing::make_raw_image(c.images_path() + "/img-c.raw");
    return c;
  };
  auto cfg_a = make_cfg("host-a"), cfg_b = make_cfg("host-b");
  // host-b spawns an instance, then goes down (its driver and store vanish).
  {
    libvirt::LibvirtDriver b(cfg_b);
    ASSERT_TRUE(b.init_host("host-b").ok());
    ASSERT_TRUE(b.spawn({"bbbbbbbb-0000-4000-8000-000000000001", "b1", "img-b", 64, 1}).ok());
  }
  // host-c registered on the storage; the store knows a live instance of it.
  ASSERT_TRUE(register_host(shared, "host-c").ok());
  store::MemoryStore store;
  InstanceRecord c1;
  c1.uuid = "cccccccc-0000-4000-8000-000000000001";
  c1.host = "host-c";
  c1.image_id = "img-c";
  ASSERT_TRUE(store.create_instance(c1).ok());
  auto mgr = compute::ComputeManager::create(cfg_a, store, "libvirt");
  ASSERT_TRUE(mgr.ok()) << mgr.error().message;
  // host-a fetches img-c and img-a; only img-a ends up unused.
  auto a1 = mgr.value()->boot("a1", "img-a", 64, 1);
  ASSERT_TRUE(a1.ok());
  auto a2 = mgr.value()->boot("a2", "img-c", 64, 1);
  ASSERT_TRUE(a2.ok());
  ASSERT_TRUE(mgr.value()->destroy(a1->uuid).ok());
  ASSERT_TRUE(mgr.value()->destroy(a2->uuid).ok());
  auto r = mgr.value()->image_cache_pass(false);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(Fixture::file(*r, sha1_hex("img-b")).state, BaseFileState::in_use);  // host-b's disk
  EXPECT_EQ(Fixture::file(*r, sha1_hex("img-c")).state, BaseFileState::in_use);  // host-c's live instance
  EXPECT_EQ(Fixture::file(*r, sha1_hex("img-a")).state, BaseFileState::removed);
  EXPECT_TRUE(fs::exists(shared + "/_base/" + sha1_hex("img-b")));
}

// Threads spawn (and destroy) while passes with zero minimum ages run in a
// loop: afterwards, and after every spawn, every disk's backing file exists.
TEST(ImageCachePass, ConcurrentSpawnStress) {
  TempDir dir("virtcap-stress");
  config::Config cfg;
  cfg.defaults.state_path = dir.str();
  cfg.libvirt.uri = "test://" + testing::write_test_node(dir);
  cfg.image_cache.remove_unused_original_minimum_age_seconds = 0;
  cfg.image_cache.remove_unused_resized_minimum_age_seconds = 0;
  fs::create_directories(cfg.images_path());
  for (const char* id : {"i0", "i1", "i2"})
    testing::make_raw_image(cfg.images_path() + "/" + id + ".raw", "256K");
  libvirt::LibvirtDriver drv(cfg);
  ASSERT_TRUE(drv.init_host("h").ok());

  std::atomic<int> spawners_left{3};
  std::atomic<int> passes{0}, removed{0}, failures{0};
  std::vector<std::string> kept;
  std::mutex kept_mu;
  std::thread cleaner([&] {
    while (spawners_left.load() > 0 || passes.load() < 3) {
      auto r = drv.manage_image_cache({}, false, {});
      if (!r.ok() || !r->complete) {
        ++failures;
        std::lock_guard lock(kept_mu);
        ADD_FAILURE() << "incomplete pass: "
                      << (!r.ok() ? r.error().message
                          : !r->unreadable_disks.empty()
                              ? r->unreadable_disks[0].path + ": " + r->unreadable_disks[0].error
                              : (r->notes.empty() ? std::string("?") : r->notes.back()));
      } else
        removed += static_cast<int>(r->files_removed);
      ++passes;
    }
  });
  std::vector<std::thread> spawners;
  for (int t = 0; t < 3; ++t) {
    spawners.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        char uuid[37];
        std::snprintf(uuid, sizeof uuid, "00000000-0000-4000-8000-%06d%06d", t, i);
        const std::string id = "i" + std::to_string((t + i) % 3);
        if (!drv.spawn({uuid, "s", id, 64, 1}).ok()) {
          ++failures;
          continue;
        }
        const auto disk = drv.instance_dir(uuid) + "/disk";
        auto h = read_header(disk);
        if (!h.ok() || !fs::exists(h->backing_file)) ++failures;  // must hold right after spawn
        if (i % 2 == 0) {
          if (!drv.destroy(uuid).ok()) ++failures;
        } else {
          std::lock_guard lock(kept_mu);
          kept.push_back(disk);
        }
      }
      --spawners_left;
    });
  }
  for (auto& s : spawners) s.join();
  cleaner.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(passes.load(), 3);
  for (const auto& disk : kept) {
    auto h = read_header(disk);
    ASSERT_TRUE(h.ok()) << disk;
    EXPECT_TRUE(fs::exists(h->backing_file)) << disk << " lost its base " << h->backing_file;
  }
  // A final pass with nothing changing keeps exactly the bases still in use.
  auto final_pass = drv.manage_image_cache({}, false, {});
  ASSERT_TRUE(final_pass.ok());
  for (const auto& f : final_pass->files) {
    if (f.kind == BaseFileKind::original) {
      EXPECT_EQ(f.state, BaseFileState::in_use) << f.name;
    }
  }
}

// The window between the first look and the unlinks, made deterministic by
// PassOptions::after_first_look (called after the first look, before the
// candidates' locks): each test plays a spawn that races the pass there.

// A disk that appears after the first look and cannot be read (a qcow2
// header cut short, of a disk backed by the candidate) is caught by the
// second look: nothing is removed, and the report names the disk.
TEST(ImageCachePass, ADiskUnreadableOnlyOnTheSecondLookRemovesNothing) {
  Fixture f;
  const auto unused = sha1_hex("unused");
  f.make_base(unused, 2 * kDay);
  const std::string cut = testing::read_file(f.make_disk("u0", "disk", f.base(unused))).substr(0, 40);
  fs::remove_all(f.opts.instances_path + "/u0");
  const std::string late = f.opts.instances_path + "/u-late/disk";
  int calls = 0;
  f.opts.after_first_look = [&] {
    ++calls;
    f.dir.write("instances/u-late/disk", cut);
  };
  const auto r = run_pass(f.opts, {});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files_removed, 0u);
  ASSERT_EQ(r.unreadable_disks.size(), 1u);
  EXPECT_EQ(r.unreadable_disks[0].path, late);
  EXPECT_EQ(Fixture::file(r, unused).state, BaseFileState::removable);
  EXPECT_NE(Fixture::file(r, unused).reason.find("not removed: a disk could not be read on the second look"),
            std::string::npos)
      << Fixture::file(r, unused).reason;
  ASSERT_FALSE(r.notes.empty());
  EXPECT_EQ(r.notes[0].rfind("second look: " + late + ": ", 0), 0u) << r.notes[0];
  EXPECT_EQ(f.remaining(), std::vector<std::string>{unused});
  EXPECT_NE(to_table(r).find("PASS INCOMPLETE"), std::string::npos);
}

// A readable disk that appears after the first look keeps its base: the
// second look, under the locks, finds it.
TEST(ImageCachePass, ADiskCreatedAfterTheFirstLookKeepsItsBase) {
  Fixture f;
  const auto used_late = sha1_hex("used-late"), unused = sha1_hex("unused");
  f.make_base(used_late, 2 * kDay);
  f.make_base(unused, 2 * kDay);
  f.opts.after_first_look = [&] { f.make_disk("u-late", "disk", f.base(used_late)); };
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.files_removed, 1u);
  EXPECT_EQ(Fixture::file(r, used_late).state, BaseFileState::in_use);
  EXPECT_NE(Fixture::file(r, used_late)
                .reason.find("a disk created during the pass uses it (used by " + f.opts.instances_path +
                             "/u-late/disk)"),
            std::string::npos)
      << Fixture::file(r, used_late).reason;
  EXPECT_EQ(Fixture::file(r, unused).state, BaseFileState::removed);
  EXPECT_EQ(f.remaining(), std::vector<std::string>{used_late});
}

// Base files changed after the first look are kept by the re-check just
// before each unlink: one replaced by a rename (another inode, the very same
// mtime), one touched (same inode, another mtime), a temporary replaced; an
// unchanged one beside them is removed.
TEST(ImageCachePass, ABaseReplacedOrTouchedAfterTheFirstLookIsKept) {
  Fixture f;
  const auto replaced = sha1_hex("replaced"), touched = sha1_hex("touched"),
             unchanged = sha1_hex("unchanged");
  const auto temp = sha1_hex("temp") + ".tmp-abcdef0123";
  for (const auto& n : {replaced, touched, unchanged, temp}) f.make_base(n, 2 * kDay);
  // Renames a new file with the old one's exact mtime over it; returns its inode.
  auto replace = [&](const std::string& name) {
    const std::string next = f.base("replacement");
    testing::make_raw_image(next, "64K");
    struct stat old {};
    EXPECT_EQ(::stat(f.base(name).c_str(), &old), 0);
    const struct timespec ts[2] = {old.st_atim, old.st_mtim};
    EXPECT_EQ(::utimensat(AT_FDCWD, next.c_str(), ts, 0), 0);
    fs::rename(next, f.base(name));
    return testing::inode(f.base(name));
  };
  ino_t replaced_ino = 0, temp_ino = 0;
  const auto touched_ino = testing::inode(f.base(touched));
  f.opts.after_first_look = [&] {
    replaced_ino = replace(replaced);
    temp_ino = replace(temp);
    testing::set_mtime(f.base(touched), now() - kDay);
  };
  const auto r = run_pass(f.opts, {});
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.files_removed, 1u);
  const std::vector<std::pair<std::string, BaseFileState>> kept = {
      {replaced, BaseFileState::in_use}, {touched, BaseFileState::in_use}, {temp, BaseFileState::kept}};
  for (const auto& [name, state] : kept) {
    EXPECT_EQ(Fixture::file(r, name).state, state) << name;
    EXPECT_EQ(Fixture::file(r, name).reason, "changed during the pass (replaced, or touched by a spawn)")
        << name;
  }
  EXPECT_EQ(Fixture::file(r, unchanged).state, BaseFileState::removed);
  auto expect = std::vector<std::string>{replaced, touched, temp};
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(f.remaining(), expect);
  EXPECT_EQ(testing::inode(f.base(replaced)), replaced_ino);
  EXPECT_EQ(testing::inode(f.base(temp)), temp_ino);
  EXPECT_EQ(testing::inode(f.base(touched)), touched_ino);
}

}  // namespace
}  // namespace virtcap::imagecache
