// Spawn latency split into its stages, on libvirt's test driver, for a 10 MiB
// and a 1 GiB image:
//   cold base fetch (copy + fsync + rename under the base-file lock) against
//   plain `cp` of the same file, the tool an operator would otherwise use;
//   warm base (already cached: lock, stat, touch); overlay creation, native
//   against `qemu-img create`, each with and without fsync (file + directory);
//   define + start; and the whole warm spawn with either overlay writer
//   ([libvirt] overlay_writer), both fsyncing the overlay and its directory.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "common/subprocess.h"
#include "config/config.h"
#include "imagecache/base_cache.h"
#include "imagecache/qcow2_writer.h"
#include "ratio.h"
#include "virt/libvirt/domain_xml.h"
#include "virt/libvirt/libvirt_driver.h"

namespace {

namespace fs = std::filesystem;
using namespace virtcap;

struct World {
  fs::path root;
  config::Config cfg;
  std::string image_10m, image_1g;

  World() {
    char tmpl[] = "/var/tmp/virtcap-bench-XXXXXX";
    root = ::mkdtemp(tmpl);
    cfg.defaults.state_path = root.string();
    cfg.libvirt.uri = "test:///default";
    fs::create_directories(cfg.images_path());
    image_10m = cfg.images_path() + "/small.raw";
    image_1g = cfg.images_path() + "/large.raw";
    write_random(image_10m, 10ull << 20);
    write_random(image_1g, 1ull << 30);
  }
  ~World() { fs::remove_all(root); }

  static void write_random(const std::string& path, std::uint64_t bytes) {
    std::ofstream out(path, std::ios::binary);
    std::mt19937_64 rng(7);
    std::vector<std::uint64_t> buf(1 << 17);
    for (std::uint64_t done = 0; done < bytes; done += buf.size() * 8) {
      for (auto& w : buf) w = rng();
      out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size() * 8));
    }
  }
  const std::string& image(std::int64_t which) const { return which == 0 ? image_10m : image_1g; }
  std::string id(std::int64_t which) const { return which == 0 ? "small" : "large"; }
};

World& world() {
  static World w;
  return w;
}

void label(benchmark::State& state) { state.SetLabel(state.range(0) == 0 ? "10MiB" : "1GiB"); }

void BM_ColdFetch(benchmark::State& state) {
  auto& w = world();
  imagecache::BaseCache cache(w.cfg.instances_path(), "_base");
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove(cache.base_path(w.id(state.range(0))));
    state.ResumeTiming();
    auto r = imagecache::ensure_base_locked(cache, w.id(state.range(0)), w.image(state.range(0)));
    if (!r.ok()) state.SkipWithError(r.error().message.c_str());
  }
  label(state);
}
BENCHMARK(BM_ColdFetch)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(8.0);

void BM_PlainCp(benchmark::State& state) {
  auto& w = world();
  const std::string dst = (w.root / "cp-target").string();
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove(dst);
    state.ResumeTiming();
    auto r = proc::run({"cp", w.image(state.range(0)), dst});
    if (!r.ok() || r->exit_code != 0) state.SkipWithError("cp failed");
  }
  label(state);
}
BENCHMARK(BM_PlainCp)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(8.0);

// `cp` then `sync FILE` (an fsync of the copy): the same durability as
// virtcap's fetch, which fsyncs before it renames.
void BM_CpAndSync(benchmark::State& state) {
  auto& w = world();
  const std::string dst = (w.root / "cp-sync-target").string();
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove(dst);
    state.ResumeTiming();
    auto r = proc::run({"cp", w.image(state.range(0)), dst});
    auto s = proc::run({"sync", dst});
    if (!r.ok() || r->exit_code != 0 || !s.ok() || s->exit_code != 0) state.SkipWithError("cp/sync failed");
  }
  label(state);
}
BENCHMARK(BM_CpAndSync)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(8.0);

void BM_WarmBase(benchmark::State& state) {
  auto& w = world();
  imagecache::BaseCache cache(w.cfg.instances_path(), "_base");
  (void)imagecache::with_base(cache, "small", w.image_10m, [](const auto&) { return Status{}; });
  for (auto _ : state) {
    auto r = imagecache::with_base(cache, "small", w.image_10m, [](const auto&) { return Status{}; });
    if (!r.ok()) state.SkipWithError(r.error().message.c_str());
  }
}
BENCHMARK(BM_WarmBase)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Arg 0: no fsync; 1: fsync the overlay, then rename (what spawn does);
// 2: also fsync the directory after the rename.
imagecache::Durability durability(benchmark::State& state) {
  using D = imagecache::Durability;
  static constexpr D kLevels[] = {D::none, D::file, D::file_and_directory};
  return kLevels[state.range(0)];
}
void overlay_label(benchmark::State& state) {
  static const char* const kLabels[] = {"no fsync", "fsync file", "fsync file + dir"};
  state.SetLabel(kLabels[state.range(0)]);
}

void BM_OverlayCreateQemuImg(benchmark::State& state) {
  auto& w = world();
  imagecache::BaseCache cache(w.cfg.instances_path(), "_base");
  auto base = imagecache::with_base(cache, "small", w.image_10m, [](const auto&) { return Status{}; });
  const std::string disk = (w.root / "overlay").string(), partial = disk + ".tmp-create";
  const auto d = durability(state);
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove(disk);
    state.ResumeTiming();
    auto r =
        proc::run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base->base_path, partial});
    if (!r.ok() || r->exit_code != 0) state.SkipWithError("qemu-img create failed");
    if (d != imagecache::Durability::none && !imagecache::fsync_file(partial, {}).ok())
      state.SkipWithError("fsync failed");
    if (!imagecache::rename_into_place(partial, disk, d).ok()) state.SkipWithError("rename failed");
  }
  overlay_label(state);
}
BENCHMARK(BM_OverlayCreateQemuImg)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The native writer as spawn runs it: the base's size (open + lseek), then
// render, write, (fsync), rename, (fsync the directory).
void BM_OverlayCreateNative(benchmark::State& state) {
  auto& w = world();
  imagecache::BaseCache cache(w.cfg.instances_path(), "_base");
  auto base = imagecache::with_base(cache, "small", w.image_10m, [](const auto&) { return Status{}; });
  const std::string disk = (w.root / "overlay").string();
  const auto d = durability(state);
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove(disk);
    state.ResumeTiming();
    auto spec = imagecache::overlay_spec_for_base(base->base_path, "raw");
    if (!spec.ok() || !imagecache::create_overlay(disk, *spec, d).ok())
      state.SkipWithError("native overlay failed");
  }
  overlay_label(state);
}
BENCHMARK(BM_OverlayCreateNative)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_DefineStart(benchmark::State& state) {
  auto& w = world();
  libvirt::LibvirtDriver drv(w.cfg);
  if (!drv.init_host("bench").ok()) return state.SkipWithError("init_host failed");
  const std::string uuid = "00000000-0000-4000-8000-000000000001";
  libvirt::DomainParams p{uuid,
                          "bench",
                          "small",
                          "test",
                          64,
                          1,
                          "/nonexistent/disk",
                          "/nonexistent/log",
                          "",
                          "52:54:00:00:00:01"};
  const std::string xml = libvirt::domain_xml(p);
  for (auto _ : state) {
    auto st = drv.connection().with([&](virConnectPtr c) -> Status {
      virDomainPtr d = virDomainDefineXML(c, xml.c_str());
      if (!d || virDomainCreate(d) < 0) return make_error(Errc::driver_error, "define/start failed");
      virDomainFree(d);
      return {};
    });
    state.PauseTiming();
    if (!st.ok()) state.SkipWithError(st.error().message.c_str());
    (void)drv.connection().with([&](virConnectPtr c) -> Status {
      virDomainPtr d = virDomainLookupByUUIDString(c, uuid.c_str());
      virDomainDestroy(d);
      virDomainUndefine(d);
      virDomainFree(d);
      return {};
    });
    state.ResumeTiming();
  }
}
BENCHMARK(BM_DefineStart)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Arg 0: overlay_writer = native; arg 1: qemu-img.
void BM_SpawnWarm(benchmark::State& state) {
  auto& w = world();
  config::Config cfg = w.cfg;
  cfg.libvirt.overlay_writer =
      state.range(0) ? config::OverlayWriter::qemu_img : config::OverlayWriter::native;
  libvirt::LibvirtDriver drv(cfg);
  if (!drv.init_host("bench").ok()) return state.SkipWithError("init_host failed");
  int n = 0;
  for (auto _ : state) {
    char uuid[37];
    std::snprintf(uuid, sizeof uuid, "00000000-0000-4000-8000-%012d", ++n);
    auto st = drv.spawn({uuid, "bench", "small", 64, 1});
    state.PauseTiming();
    if (!st.ok()) state.SkipWithError(st.error().message.c_str());
    (void)drv.destroy(uuid);
    state.ResumeTiming();
  }
  state.SetLabel(std::string(config::to_string(cfg.libvirt.overlay_writer)));
}
BENCHMARK(BM_SpawnWarm)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  return virtcap::bench::run_with_ratios(
      argc, argv,
      {{"BM_PlainCp/0/min_time:8.000/real_time", "BM_ColdFetch/0/min_time:8.000/real_time",
        "cold fetch vs cp, 10 MiB"},
       {"BM_PlainCp/1/min_time:8.000/real_time", "BM_ColdFetch/1/min_time:8.000/real_time",
        "cold fetch vs cp, 1 GiB"},
       {"BM_CpAndSync/0/min_time:8.000/real_time", "BM_ColdFetch/0/min_time:8.000/real_time",
        "cold fetch vs cp + sync FILE, 10 MiB"},
       {"BM_CpAndSync/1/min_time:8.000/real_time", "BM_ColdFetch/1/min_time:8.000/real_time",
        "cold fetch vs cp + sync FILE, 1 GiB"},
       {"BM_OverlayCreateQemuImg/1/real_time", "BM_WarmBase/real_time",
        "warm base vs overlay creation (qemu-img)"},
       {"BM_OverlayCreateQemuImg/1/real_time", "BM_OverlayCreateNative/1/real_time",
        "overlay creation, native vs qemu-img, fsync file"},
       {"BM_OverlayCreateQemuImg/2/real_time", "BM_OverlayCreateNative/2/real_time",
        "overlay creation, native vs qemu-img, fsync file + dir"},
       {"BM_OverlayCreateQemuImg/0/real_time", "BM_OverlayCreateNative/0/real_time",
        "overlay creation, native vs qemu-img, no fsync"},
       {"BM_SpawnWarm/1/real_time", "BM_SpawnWarm/0/real_time", "warm spawn, native vs qemu-img writer"}});
}
