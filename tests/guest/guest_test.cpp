// The real-guest test: a session libvirtd (qemu:///session) boots a tiny TCG
// guest from a generated image. Runs as a non-root user (see run-as-user.sh).
//
// It proves: discovered capabilities differ from the test driver's as they
// should; spawn/attach/destroy work on a real QEMU; the guest boots from the
// natively written qcow2 overlay (the default [libvirt] overlay_writer) and
// writes to it, and the overlay stays consistent; a libvirt daemon killed
// mid-run makes operations fail cleanly and periodic tasks skip, nothing is
// lost, and the driver reconnects once the daemon is back.
#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <map>

#include "compute/manager.h"
#include "store/memory/memory_store.h"
#include "support/test_support.h"
#include "virt/libvirt/libvirt_driver.h"

namespace virtcap {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

int daemon_pid() {
  const char* rt = std::getenv("XDG_RUNTIME_DIR");
  if (!rt) return -1;
  std::ifstream in(std::string(rt) + "/libvirt/libvirtd.pid");
  int pid = -1;
  in >> pid;
  return pid;
}

// A 512-byte boot sector (assembled from this, then hand-checked with objdump):
//   cli; xor ax,ax; mov ds/es/ss,ax; mov sp,0x7c00; sti
//   mov ax,0x0301; mov cx,0x0002; xor dh,dh; mov bx,0x7c00; int 0x13
//       (BIOS: write 1 sector - this very sector - to cylinder 0, head 0,
//        sector 2, i.e. LBA 1, of the boot drive DL)
//   mov si,ok; jnc print; mov si,bad
//   print: lodsb; test al,al; jz done; mov dx,0x3f8; out dx,al; jmp print
//       (the message to COM1, the domain's console.log)
//   done: hlt; jmp done
// The guest therefore writes exactly one sector of its disk and says so.
std::string boot_sector() {
  static const unsigned char kCode[] = {
      0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfb, 0xb8, 0x01, 0x03,
      0xb9, 0x02, 0x00, 0x30, 0xf6, 0xbb, 0x00, 0x7c, 0xcd, 0x13, 0xbe, 0x30, 0x7c, 0x73, 0x03, 0xbe,
      0x4f, 0x7c, 0xac, 0x84, 0xc0, 0x74, 0x06, 0xba, 0xf8, 0x03, 0xee, 0xeb, 0xf5, 0xf4, 0xeb, 0xfd};
  std::string s(reinterpret_cast<const char*>(kCode), sizeof kCode);  // 0x30 bytes: "ok" is at 0x7c30
  s += std::string("virtcap-guest: disk write ok\r\n") + '\0';        // 31 bytes: "bad" is at 0x7c4f
  s += std::string("virtcap-guest: disk write failed\r\n") + '\0';
  s.resize(510, '\0');
  return s + "\x55\xaa";
}

// Waits (inotify on the file, with a deadline) until `path` contains `text`.
bool wait_for_text(const std::string& path, const std::string& text, std::chrono::seconds timeout) {
  const int in = ::inotify_init1(IN_CLOEXEC);
  if (in < 0 || ::inotify_add_watch(in, path.c_str(), IN_MODIFY) < 0) {
    if (in >= 0) ::close(in);
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool found = false;
  while (!(found = testing::read_file(path).find(text) != std::string::npos)) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{in, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
      char buf[4096];
      (void)!::read(in, buf, sizeof buf);
    }
  }
  ::close(in);
  return found;
}

// Pauses (QEMU drains and flushes every disk when the VM stops) or resumes.
Status set_paused(libvirt::LibvirtDriver& drv, const std::string& uuid, bool paused) {
  return drv.connection().with([&](virConnectPtr c) -> Status {
    virDomainPtr d = virDomainLookupByUUIDString(c, uuid.c_str());
    if (!d) return make_error(Errc::not_found, uuid);
    const int r = paused ? virDomainSuspend(d) : virDomainResume(d);
    virDomainFree(d);
    if (r < 0) return make_error(Errc::driver_error, paused ? "suspend failed" : "resume failed");
    return {};
  });
}

// The operator's view: the CLI against qemu:///session shows attach as
// supported, against the test driver as not.
TEST(RealGuest, CapabilitiesCommandShowsWhatEachHypervisorSupports) {
  ASSERT_NE(::geteuid(), 0u) << "run through tests/guest/run-as-user.sh";
  // Its own state_path: the default (/var/lib/virtcap) belongs to the host,
  // and this test runs as an unprivileged user.
  testing::TempDir dir("virtcap-guest-caps");
  const std::string cfg = dir.write("virtcap.toml", "[DEFAULT]\nstate_path = \"" + dir.str() + "\"\n");
  auto attach_of = [&](const std::string& uri) {
    auto out = testing::must_run({VIRTCAP_BINARY, "capabilities", "--config", cfg, "--driver", "libvirt",
                                  "--uri", uri, "--format", "json"});
    auto j = nlohmann::json::parse(out.out);
    std::map<std::string, nlohmann::json> values;
    for (const auto& c : j.at("capabilities")) values[c.at("name")] = c.at("value");
    EXPECT_EQ(values["has_imagecache"], true) << uri;
    return values["supports_attach_interface"].get<bool>();
  };
  EXPECT_TRUE(attach_of("qemu:///session"));
  EXPECT_FALSE(attach_of("test:///default"));
}

TEST(RealGuest, BootHotplugSurviveADaemonRestartAndDestroy) {
  ASSERT_NE(::geteuid(), 0u)
      << "qemu:///session needs a non-root user; run through tests/guest/run-as-user.sh";
  // This process plays the agent's part (the driver runs in it), so it
  // ignores SIGPIPE as `virtcap agent` does: libvirt's client writes to the
  // session daemon's socket with write(2), and a daemon killed mid-write
  // (the restart below) raised SIGPIPE and killed this test without a word
  // once in CI (issue 19, item 7).
  std::signal(SIGPIPE, SIG_IGN);
  TempDir dir("virtcap-guest");
  config::Config cfg;
  cfg.defaults.state_path = dir.str();
  cfg.defaults.host = "guest-host";
  cfg.libvirt.uri = "qemu:///session";
  cfg.libvirt.reconnect_max_backoff_seconds = 1;
  std::filesystem::create_directories(cfg.images_path());
  ASSERT_EQ(cfg.libvirt.overlay_writer, config::OverlayWriter::native)
      << "the default writer is the one under test";
  // No OS: the firmware boots the sector above, which writes to the disk and halts.
  testing::make_raw_image(cfg.images_path() + "/tiny.raw", "1M");
  {
    std::fstream img(cfg.images_path() + "/tiny.raw", std::ios::in | std::ios::out | std::ios::binary);
    img << boot_sector();
    ASSERT_TRUE(img.good());
  }

  // Discovery differs from the test driver's, as it should.
  Capabilities test_caps;
  {
    TempDir tdir;
    config::Config tcfg;
    tcfg.defaults.state_path = tdir.str();
    libvirt::LibvirtDriver test_driver(tcfg);
    ASSERT_TRUE(test_driver.init_host("h").ok());
    test_caps = test_driver.capabilities();
  }
  store::MemoryStore store;
  auto driver = std::make_unique<libvirt::LibvirtDriver>(cfg);
  auto* drv = driver.get();
  auto created = compute::ComputeManager::create(cfg, store, std::move(driver));
  ASSERT_TRUE(created.ok()) << created.error().message;
  auto& mgr = *created.value();
  const auto& caps = mgr.capabilities();
  EXPECT_TRUE(caps.has_imagecache);
  EXPECT_TRUE(caps.supports_attach_interface);
  EXPECT_FALSE(test_caps.supports_attach_interface);
  EXPECT_TRUE(caps.virt_type == VirtType::qemu || caps.virt_type == VirtType::kvm);
  EXPECT_EQ(test_caps.virt_type, VirtType::test);
  EXPECT_GT(caps.max_vcpus, 0);

  // Boot, see it running, hot-plug an interface.
  auto rec = mgr.boot("guest-1", "tiny", 64, 1);
  ASSERT_TRUE(rec.ok()) << rec.error().describe();
  auto inst = drv->get_instance(rec->uuid);
  ASSERT_TRUE(inst.ok()) << inst.error().describe();
  EXPECT_EQ(inst->power_state, PowerState::running);
  ASSERT_EQ(inst->interfaces.size(), 1u);
  auto nic = mgr.attach_interface(rec->uuid, {});
  ASSERT_TRUE(nic.ok()) << nic.error().describe();
  inst = drv->get_instance(rec->uuid);
  ASSERT_TRUE(inst.ok());
  ASSERT_EQ(inst->interfaces.size(), 2u);
  EXPECT_EQ(inst->interfaces[1].mac, nic->mac);
  const std::string disk = drv->instance_dir(rec->uuid) + "/disk";
  const std::string base = cfg.base_dir() + "/" + imagecache::BaseCache::base_name("tiny");
  EXPECT_EQ(testing::qemu_img_info(disk).at("backing-filename"), base);

  // The guest wrote its disk: the console says so, and with the VM paused
  // (caches flushed) the overlay holds the boot sector at LBA 1, passes
  // qemu-img check, and the base is untouched.
  const std::string console = drv->instance_dir(rec->uuid) + "/console.log";
  ASSERT_TRUE(wait_for_text(console, "virtcap-guest: disk write", 180s))
      << "console: " << testing::read_file(console);
  EXPECT_NE(testing::read_file(console).find("virtcap-guest: disk write ok"), std::string::npos)
      << testing::read_file(console);
  ASSERT_TRUE(set_paused(*drv, rec->uuid, true).ok());
  testing::must_run({"qemu-img", "check", "-U", disk});
  testing::must_run({"qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -P 0xfa 512 1", "-c",
                     "read -P 0x55 1022 1", "-c", "read -P 0 1024 1047552", disk});
  testing::must_run({"qemu-io", "-U", "-r", "-f", "raw", "-c", "read -P 0 512 512", base});
  auto map = nlohmann::json::parse(testing::must_run({"qemu-img", "map", "-U", "--output=json", disk}).out);
  bool overlay_has_data = false;
  for (const auto& m : map)
    if (m.value("depth", -1) == 0 && m.value("data", false)) overlay_has_data = true;
  EXPECT_TRUE(overlay_has_data) << map.dump();
  ASSERT_TRUE(set_paused(*drv, rec->uuid, false).ok());

  // Kill the daemon mid-run, with autostart off so it stays down.
  const int pid = daemon_pid();
  ASSERT_GT(pid, 0);
  ::setenv("LIBVIRT_AUTOSTART", "0", 1);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(drv->connection().wait_for(false, 60s)) << "the close callback never fired";
  auto down = drv->get_instance(rec->uuid);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::hypervisor_unavailable);
  EXPECT_NE(down.error().message.find("qemu:///session"), std::string::npos);
  EXPECT_EQ(mgr.reboot(rec->uuid).error().code, Errc::hypervisor_unavailable);
  auto task = mgr.sync_power_states();
  EXPECT_EQ(task.kind, compute::TaskOutcome::Kind::skipped);
  EXPECT_NE(task.message.find("unavailable"), std::string::npos) << task.message;
  EXPECT_EQ(mgr.destroy(rec->uuid).error().code, Errc::hypervisor_unavailable);
  EXPECT_TRUE(std::filesystem::exists(disk)) << "nothing is lost while the hypervisor is away";

  // Let the daemon come back (the reconnect loop autostarts it again).
  ::unsetenv("LIBVIRT_AUTOSTART");
  ASSERT_TRUE(drv->connection().wait_for(true, 120s)) << drv->unavailable_reason();
  EXPECT_GE(drv->connection().reconnects(), 1u);
  inst = drv->get_instance(rec->uuid);
  ASSERT_TRUE(inst.ok()) << inst.error().describe();
  EXPECT_EQ(inst->power_state, PowerState::running) << "the guest outlived its daemon";

  // Destroy: domain and instance dir gone, base kept.
  ASSERT_TRUE(mgr.destroy(rec->uuid).ok());
  EXPECT_EQ(drv->get_instance(rec->uuid).error().code, Errc::not_found);
  EXPECT_FALSE(std::filesystem::exists(drv->instance_dir(rec->uuid)));
  EXPECT_TRUE(std::filesystem::exists(cfg.base_dir() + "/" + imagecache::BaseCache::base_name("tiny")));
}

}  // namespace
}  // namespace virtcap
