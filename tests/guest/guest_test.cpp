// The real-guest test: a session libvirtd (qemu:///session) boots a tiny TCG
// guest from a generated image. Runs as a non-root user (see run-as-user.sh).
//
// It proves: discovered capabilities differ from the test driver's as they
// should; spawn/attach/destroy work on a real QEMU; a libvirt daemon killed
// mid-run makes operations fail cleanly and periodic tasks skip, nothing is
// lost, and the driver reconnects once the daemon is back.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
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

// The operator's view: the CLI against qemu:///session shows attach as
// supported, against the test driver as not.
TEST(RealGuest, CapabilitiesCommandShowsWhatEachHypervisorSupports) {
  ASSERT_NE(::geteuid(), 0u) << "run through tests/guest/run-as-user.sh";
  auto attach_of = [](const std::string& uri) {
    auto out = testing::must_run({VIRTCAP_BINARY, "capabilities", "--driver", "libvirt", "--uri", uri, "--format", "json"});
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
  ASSERT_NE(::geteuid(), 0u) << "qemu:///session needs a non-root user; run through tests/guest/run-as-user.sh";
  TempDir dir("virtcap-guest");
  config::Config cfg;
  cfg.defaults.state_path = dir.str();
  cfg.defaults.host = "guest-host";
  cfg.libvirt.uri = "qemu:///session";
  cfg.libvirt.reconnect_max_backoff_seconds = 1;
  std::filesystem::create_directories(cfg.images_path());
  testing::make_raw_image(cfg.images_path() + "/tiny.raw", "1M");  // no OS: firmware runs, finds nothing, idles

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
  EXPECT_EQ(testing::qemu_img_info(disk).at("backing-filename"), cfg.base_dir() + "/" + imagecache::BaseCache::base_name("tiny"));

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
