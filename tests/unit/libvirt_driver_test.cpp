// The libvirt driver against libvirt's real test driver (in-process, no
// daemon), with real qcow2 files from qemu-img.
#include "virt/libvirt/libvirt_driver.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>

#include "api/instance_list.h"
#include "common/sha1.h"
#include "compute/manager.h"
#include "store/memory/memory_store.h"
#include "support/test_support.h"
#include "virt/libvirt/domain_xml.h"

namespace virtcap::libvirt {
namespace {

using testing::TempDir;

constexpr const char* kUuidA = "11111111-2222-4333-8444-555555555555";
constexpr const char* kUuidB = "11111111-2222-4333-8444-666666666666";

struct Fixture {
  TempDir dir{"virtcap-libvirt"};
  config::Config cfg;
  std::unique_ptr<LibvirtDriver> driver;

  explicit Fixture(bool own_node = true, OverlayWriter overlay_writer = OverlayWriter::native) {
    cfg.defaults.state_path = dir.str();
    cfg.defaults.host = "host-a";
    cfg.libvirt.overlay_writer = overlay_writer;
    cfg.libvirt.uri = own_node ? "test://" + testing::write_test_node(dir) : "test:///default";
    std::filesystem::create_directories(cfg.images_path());
    driver = std::make_unique<LibvirtDriver>(cfg);
    EXPECT_TRUE(driver->init_host("host-a").ok());
  }
  std::string image(const std::string& name) const { return cfg.images_path() + "/" + name; }
  std::string base_of(const std::string& id) const { return cfg.base_dir() + "/" + sha1_hex(id); }
};

TEST(LibvirtDiscovery, TestDriverHasNoAttachAndNoDomainCapabilities) {
  Fixture f(false);
  const auto& c = f.driver->capabilities();
  EXPECT_TRUE(c.has_imagecache);  // static
  EXPECT_EQ(c.image_formats, (ImageFormats{ImageFormat::raw, ImageFormat::qcow2}));
  EXPECT_EQ(c.virt_type, VirtType::test);
  EXPECT_FALSE(c.supports_attach_interface);
  EXPECT_FALSE(c.supports_secure_boot);
  EXPECT_FALSE(c.supports_vtpm);
  EXPECT_GT(c.max_vcpus, 0);
}

TEST(LibvirtDiscovery, DomainCapabilitiesXmlDrivesSecureBootVtpmAndVcpus) {
  Capabilities caps = kLibvirtStatic;
  apply_domain_capabilities(R"(<domainCapabilities>
    <path>/usr/bin/qemu-system-x86_64</path><domain>qemu</domain>
    <vcpu max='255'/>
    <os supported='yes'><loader supported='yes'>
      <enum name='type'><value>rom</value><value>pflash</value></enum>
      <enum name='secure'><value>yes</value><value>no</value></enum>
    </loader></os>
    <devices><tpm supported='yes'>
      <enum name='model'><value>tpm-tis</value></enum>
      <enum name='backendModel'><value>passthrough</value><value>emulator</value></enum>
    </tpm></devices></domainCapabilities>)",
                            caps);
  EXPECT_EQ(caps.max_vcpus, 255);
  EXPECT_TRUE(caps.supports_secure_boot);
  EXPECT_TRUE(caps.supports_vtpm);

  Capabilities plain = kLibvirtStatic;
  apply_domain_capabilities(R"(<domainCapabilities><vcpu max='8'/>
    <os supported='yes'><loader supported='yes'><enum name='secure'><value>no</value></enum></loader></os>
    <devices><tpm supported='yes'><enum name='backendModel'><value>passthrough</value></enum></tpm></devices>
    </domainCapabilities>)",
                            plain);
  EXPECT_FALSE(plain.supports_secure_boot);
  EXPECT_FALSE(plain.supports_vtpm);
}

TEST(LibvirtDriver, UnreachableUriIsAClearStartupError) {
  TempDir dir;
  config::Config cfg;
  cfg.defaults.state_path = dir.str();
  cfg.libvirt.uri = "test:///nonexistent/node.xml";
  LibvirtDriver d(cfg);
  auto st = d.init_host("h");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::hypervisor_unavailable);
  EXPECT_NE(st.error().message.find("test:///nonexistent/node.xml"), std::string::npos) << st.error().message;
}

TEST(LibvirtDriver, SpawnMakesAQcow2OverlayOnTheSha1NamedBase) {
  Fixture f;
  testing::make_raw_image(f.image("cirros.raw"), "10M");
  ASSERT_TRUE(f.driver->spawn({kUuidA, "web-1", "cirros", 128, 1}).ok());

  const std::string disk = f.driver->instance_dir(kUuidA) + "/disk";
  const auto info = testing::qemu_img_info(disk);
  EXPECT_EQ(info.at("format"), "qcow2");
  EXPECT_EQ(info.at("backing-filename"), f.base_of("cirros"));
  EXPECT_EQ(info.at("backing-filename-format"), "raw");
  EXPECT_EQ(info.at("virtual-size"), 10 * 1024 * 1024);
  testing::must_run({"qemu-img", "check", "--force-share", disk});
  EXPECT_EQ(testing::read_file(f.base_of("cirros")), testing::read_file(f.image("cirros.raw")));

  auto inst = f.driver->get_instance(kUuidA);
  ASSERT_TRUE(inst.ok()) << inst.error().describe();
  EXPECT_EQ(inst->name, "web-1");
  EXPECT_EQ(inst->power_state, PowerState::running);
  EXPECT_EQ(inst->memory_mb, 128);
  ASSERT_EQ(inst->interfaces.size(), 1u);
  auto all = f.driver->list_instances();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);  // only virtcap's domains
}

// [libvirt] overlay_writer: the native writer (default) and qemu-img make
// disks qemu-img describes alike, both clean, neither leaving a temporary.
TEST(LibvirtDriver, BothOverlayWritersMakeEquivalentCleanDisks) {
  std::map<std::string, nlohmann::json> infos;
  for (const OverlayWriter w : {OverlayWriter::native, OverlayWriter::qemu_img}) {
    const std::string writer(config::to_string(w));
    SCOPED_TRACE(writer);
    Fixture f(true, w);
    testing::make_raw_image(f.image("cirros.raw"), "10M");
    testing::make_qcow2_image(f.image("ubuntu.qcow2"), "3G");
    ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "cirros", 128, 1}).ok());
    ASSERT_TRUE(f.driver->spawn({kUuidB, "b", "ubuntu", 128, 1}).ok());
    for (const char* uuid : {kUuidA, kUuidB}) {
      const std::string disk = f.driver->instance_dir(uuid) + "/disk";
      testing::must_run({"qemu-img", "check", "--force-share", disk});
      auto info = testing::qemu_img_info(disk);
      for (const char* key : {"virtual-size", "backing-filename-format", "cluster-size", "format"})
        infos[writer + uuid + key] = info.at(key);
      EXPECT_EQ(info.at("backing-filename"), f.base_of(uuid == std::string(kUuidA) ? "cirros" : "ubuntu"));
      EXPECT_EQ(testing::tree(f.driver->instance_dir(uuid)), std::vector<std::string>{"disk"});
      // Issue 19: a guest's disk is not readable by other users.
      struct stat st {};
      ASSERT_EQ(::stat(disk.c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0600u) << disk;
      ASSERT_EQ(::stat(f.driver->instance_dir(uuid).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0700u);
      ASSERT_EQ(::stat(f.base_of(uuid == std::string(kUuidA) ? "cirros" : "ubuntu").c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0600u);
    }
  }
  for (const char* uuid : {kUuidA, kUuidB})
    for (const char* key : {"virtual-size", "backing-filename-format", "cluster-size", "format"})
      EXPECT_EQ(infos[std::string("native") + uuid + key], infos[std::string("qemu-img") + uuid + key])
          << key;
  EXPECT_EQ(infos[std::string("native") + kUuidB + "virtual-size"], 3ll << 30);
}

// A cached qcow2 base that is no longer qcow2 (damaged after it was
// fetched) fails the next spawn with the file named, and leaves no instance
// directory and no domain behind.
TEST(LibvirtDriver, NativeWriterRefusesADamagedBaseAndRollsBack) {
  Fixture f;
  testing::make_qcow2_image(f.image("ubuntu.qcow2"), "20M");
  ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "ubuntu", 128, 1}).ok());
  std::filesystem::resize_file(f.base_of("ubuntu"), 0);
  auto st = f.driver->spawn({kUuidB, "b", "ubuntu", 128, 1});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::invalid_argument);
  EXPECT_NE(st.error().message.find(f.base_of("ubuntu")), std::string::npos) << st.error().message;
  EXPECT_FALSE(std::filesystem::exists(f.driver->instance_dir(kUuidB)));
  // The domain is defined while the overlay is written; a failed overlay
  // undefines it again.
  auto gone = f.driver->get_instance(kUuidB);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, Errc::not_found) << gone.error().message;
}

TEST(LibvirtDriver, Qcow2ImagesAreBackedAsQcow2AndTheBaseIsSharedAndTouched) {
  Fixture f;
  testing::make_qcow2_image(f.image("ubuntu.qcow2"), "20M");
  ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "ubuntu", 128, 1}).ok());
  const auto base = f.base_of("ubuntu");
  testing::set_mtime(base, 1000000000);
  ASSERT_TRUE(f.driver->spawn({kUuidB, "b", "ubuntu", 128, 1}).ok());
  EXPECT_GT(testing::mtime_ns(base), std::int64_t{1000000000} * 1000000000) << "spawn touches the base";
  for (const char* u : {kUuidA, kUuidB}) {
    const auto info = testing::qemu_img_info(f.driver->instance_dir(u) + "/disk");
    EXPECT_EQ(info.at("backing-filename"), base);
    EXPECT_EQ(info.at("backing-filename-format"), "qcow2");
  }
  EXPECT_EQ(testing::tree(f.cfg.base_dir()), std::vector<std::string>{sha1_hex("ubuntu")});
}

TEST(LibvirtDriver, DestroyRemovesDomainAndInstanceDirButKeepsTheBase) {
  Fixture f;
  testing::make_raw_image(f.image("img.raw"));
  ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "img", 64, 1}).ok());
  ASSERT_TRUE(f.driver->destroy(kUuidA).ok());
  EXPECT_FALSE(std::filesystem::exists(f.driver->instance_dir(kUuidA)));
  EXPECT_TRUE(std::filesystem::exists(f.base_of("img")));
  EXPECT_EQ(f.driver->get_instance(kUuidA).error().code, Errc::not_found);
  EXPECT_TRUE(f.driver->destroy(kUuidA).ok()) << "destroying what is gone succeeds";
}

TEST(LibvirtDriver, RebootRunningAndUnknown) {
  Fixture f;
  testing::make_raw_image(f.image("img.raw"));
  ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "img", 64, 1}).ok());
  EXPECT_TRUE(f.driver->reboot(kUuidA).ok());
  EXPECT_EQ(f.driver->get_instance(kUuidA)->power_state, PowerState::running);
  EXPECT_EQ(f.driver->reboot(kUuidB).error().code, Errc::not_found);
  EXPECT_EQ(f.driver->reboot("../../etc").error().code, Errc::invalid_argument);
}

TEST(LibvirtDriver, BadImagesAreRefusedAndNothingIsLost) {
  Fixture f;
  testing::make_raw_image(f.image("good.raw"));
  ASSERT_TRUE(f.driver->spawn({kUuidA, "keep", "good", 64, 1}).ok());
  const auto before = testing::tree(f.cfg.instances_path());

  // Truncated qcow2, garbage named .qcow2, qcow2 named .raw, empty raw, odd-sized raw.
  testing::make_qcow2_image(f.image("full.qcow2"));
  f.dir.write("images/truncated.qcow2", testing::read_file(f.image("full.qcow2")).substr(0, 50));
  f.dir.write("images/garbage.qcow2", std::string(4096, 'x'));
  f.dir.write("images/liar.raw", testing::read_file(f.image("full.qcow2")));
  f.dir.write("images/empty.raw", "");
  f.dir.write("images/odd.raw", std::string(1000, '\0'));
  testing::make_qcow2_image(f.image("layered.qcow2"));
  testing::must_run({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", f.image("layered.qcow2"),
                     f.image("overlay.qcow2")});
  struct Case {
    const char* id;
    Errc code;
    const char* says;
  };
  for (const Case& c :
       {Case{"missing", Errc::not_found, "not found"},
        Case{"../etc/passwd", Errc::invalid_argument, "invalid"},
        Case{"..", Errc::invalid_argument, "invalid"}, Case{"a/b", Errc::invalid_argument, "invalid"},
        Case{"truncated", Errc::invalid_argument, "corrupt"},
        Case{"garbage", Errc::invalid_argument, "no qcow2 header"},
        Case{"liar", Errc::invalid_argument, "named .raw but is a qcow2"},
        Case{"empty", Errc::invalid_argument, "empty"},
        Case{"odd", Errc::invalid_argument, "multiple of 512"},
        Case{"overlay", Errc::invalid_argument, "backing file"}}) {
    auto st = f.driver->spawn({kUuidB, "new", c.id, 64, 1});
    ASSERT_FALSE(st.ok()) << c.id;
    EXPECT_EQ(st.error().code, c.code) << c.id << ": " << st.error().message;
    EXPECT_NE(st.error().message.find(c.says), std::string::npos) << c.id << ": " << st.error().message;
    EXPECT_EQ(testing::tree(f.cfg.instances_path()), before) << c.id;
  }
  EXPECT_EQ(f.driver->get_instance(kUuidA)->power_state, PowerState::running);
}

TEST(LibvirtDriver, AFailedDefineRollsBackTheInstanceDirAndKeepsTheBase) {
  Fixture f;
  testing::make_raw_image(f.image("img.raw"));
  ASSERT_TRUE(f.driver->spawn({kUuidA, "a", "img", 64, 1}).ok());
  const auto before = testing::tree(f.cfg.instances_path());
  // A foreign domain already holds kUuidB: the define refuses to touch it
  // (a same-named one would be redefined by libvirt), the step's leftovers
  // are removed - but not the foreign domain, nor the base.
  auto defined = f.driver->connection().with([](virConnectPtr c) -> Status {
    const std::string xml = std::string("<domain type='test'><name>foreign</name><uuid>") + kUuidB +
                            "</uuid><memory>65536</memory><os><type>hvm</type></os></domain>";
    virDomainPtr d = virDomainDefineXML(c, xml.c_str());
    if (!d) return make_error(Errc::driver_error, "define failed");
    virDomainFree(d);
    return {};
  });
  ASSERT_TRUE(defined.ok());
  auto st = f.driver->spawn({kUuidB, "b", "img", 64, 1});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::already_exists) << st.error().message;
  EXPECT_NE(st.error().message.find("already has a domain with uuid"), std::string::npos)
      << st.error().message;
  EXPECT_EQ(testing::tree(f.cfg.instances_path()), before) << st.error().message;
  EXPECT_TRUE(std::filesystem::exists(f.base_of("img")));
  auto foreign = f.driver->connection().with([](virConnectPtr c) -> Status {
    virDomainPtr d = virDomainLookupByUUIDString(c, kUuidB);
    if (!d) return make_error(Errc::not_found, "gone");
    virDomainFree(d);
    return {};
  });
  EXPECT_TRUE(foreign.ok()) << "the foreign domain is untouched";
}

TEST(LibvirtDriver, NodeFilesGiveEachConnectionItsOwnState) {
  Fixture a, b;
  testing::make_raw_image(a.image("img.raw"));
  ASSERT_TRUE(a.driver->spawn({kUuidA, "a", "img", 64, 1}).ok());
  EXPECT_EQ(a.driver->list_instances()->size(), 1u);
  EXPECT_EQ(b.driver->list_instances()->size(), 0u);
}

// A compute manager over the libvirt driver on a test node of its own, a
// memory store and one raw image "img".
struct ManagerOnLibvirt {
  TempDir dir;
  config::Config cfg;
  store::MemoryStore store;
  std::unique_ptr<compute::ComputeManager> mgr;
  ManagerOnLibvirt() {
    cfg.defaults.state_path = dir.str();
    cfg.libvirt.uri = "test://" + testing::write_test_node(dir);
    std::filesystem::create_directories(cfg.images_path());
    testing::make_raw_image(cfg.images_path() + "/img.raw");
    auto made = compute::ComputeManager::create(cfg, store, "libvirt");
    EXPECT_TRUE(made.ok()) << made.error().message;
    if (made.ok()) mgr = std::move(made.value());
  }
  LibvirtDriver& driver() { return dynamic_cast<LibvirtDriver&>(mgr->driver()); }
};

TEST(LibvirtDriver, ManagerRefusesAttachOnTheTestDriverUpFront) {
  ManagerOnLibvirt m;
  ASSERT_TRUE(m.mgr);
  EXPECT_TRUE(m.mgr->capabilities().has_imagecache);
  auto rec = m.mgr->boot("vm", "img", 64, 1);
  ASSERT_TRUE(rec.ok()) << rec.error().describe();
  auto r = m.mgr->attach_interface(rec->uuid, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::capability_not_supported);
  EXPECT_EQ(r.error().capability, "supports_attach_interface");
  EXPECT_EQ(r.error().driver, "libvirt");
}

// GET /v1/instances keeps rendered pages while the store stands still. Power
// states come from the hypervisor and change without any store write (a
// guest pausing or shutting itself down): a page showing them - `long`, a
// `power_state` filter - is rendered afresh every time, while the plain page
// beside it is reused.
TEST(LibvirtDriver, AListPageShowingPowerStatesIsNeverReused) {
  ManagerOnLibvirt m;
  ASSERT_TRUE(m.mgr);
  auto rec = m.mgr->boot("vm", "img", 64, 1);
  ASSERT_TRUE(rec.ok()) << rec.error().describe();
  api::ListPageCache cache;
  auto page = [&](const std::map<std::string, std::string>& params) {
    auto body = api::list_instances_body(*m.mgr, params, &cache);
    EXPECT_TRUE(body.ok()) << body.error().message;
    return body.ok() ? nlohmann::json::parse(**body)["instances"] : nlohmann::json::array();
  };
  for (int i = 0; i < 2; ++i) {  // the second round may come from the cache
    ASSERT_EQ(page({{"long", "true"}}).size(), 1U);
    EXPECT_EQ(page({{"long", "true"}})[0]["power_state"], "running");
    EXPECT_EQ(page({{"power_state", "running"}}).size(), 1U);
    EXPECT_EQ(page({{"long", "false"}}).size(), 1U);
  }
  const std::string uuid = rec->uuid;
  auto paused = m.driver().connection().with([&](virConnectPtr c) -> Status {
    virDomainPtr d = virDomainLookupByUUIDString(c, uuid.c_str());
    if (!d) return make_error(Errc::driver_error, "lookup failed");
    const int rc = virDomainSuspend(d);
    virDomainFree(d);
    return rc == 0 ? Status{} : make_error(Errc::driver_error, "suspend failed");
  });
  ASSERT_TRUE(paused.ok()) << paused.error().message;
  ASSERT_EQ(page({{"long", "true"}}).size(), 1U);
  EXPECT_EQ(page({{"long", "true"}})[0]["power_state"], "paused")
      << "the hypervisor's state, not a kept page";
  EXPECT_TRUE(page({{"power_state", "running"}}).empty());
  EXPECT_EQ(page({{"power_state", "paused"}}).size(), 1U);
  EXPECT_EQ(page({{"long", "false"}}).size(), 1U);
}

// An agent killed in the middle of a spawn leaves its record "spawning" and,
// at most, a domain that was defined but never started (spawn defines while
// it writes the overlay; start is its last step). Reconcile finishes only a
// spawn whose domain runs: a defined domain that never started is rolled
// back - undefined, its directory (a half-made disk) removed, the record
// marked error - and a finished instance beside it is left alone.
TEST(LibvirtDriver, ReconcileRollsBackASpawnWhoseDomainNeverStarted) {
  ManagerOnLibvirt m;
  ASSERT_TRUE(m.mgr);
  auto& mgr = *m.mgr;
  auto& store = m.store;
  auto& drv = m.driver();
  auto done = mgr.boot("done", "img", 64, 1);
  ASSERT_TRUE(done.ok()) << done.error().describe();

  InstanceRecord half = *done;
  half.uuid = kUuidB;
  half.name = "half";
  half.vm_state = VmState::building;
  half.task_state = TaskState::spawning;
  ASSERT_TRUE(store.create_instance(half).ok());
  const std::string half_dir = drv.instance_dir(kUuidB);
  std::filesystem::create_directories(half_dir);
  std::ofstream(half_dir + "/disk.tmp-overlay") << "QFI";  // the overlay, cut short
  const DomainParams p{kUuidB,
                       "half",
                       "img",
                       "test",
                       64,
                       1,
                       half_dir + "/disk",
                       half_dir + "/console.log",
                       "",
                       "52:54:00:00:00:0b"};
  auto defined = drv.connection().with([&](virConnectPtr c) -> Status {
    virDomainPtr d = virDomainDefineXML(c, domain_xml(p).c_str());
    if (!d) return make_error(Errc::driver_error, "define failed");
    virDomainFree(d);
    return {};
  });
  ASSERT_TRUE(defined.ok());
  ASSERT_EQ(drv.get_instance(kUuidB)->power_state, PowerState::shutdown);

  auto rep = mgr.reconcile(true);
  ASSERT_TRUE(rep.ok()) << rep.error().message;
  EXPECT_EQ(rep->rolled_back_spawns, std::vector<std::string>{kUuidB});
  EXPECT_TRUE(rep->finished_spawns.empty());
  EXPECT_EQ(store.get_instance(kUuidB)->vm_state, VmState::error);
  EXPECT_EQ(store.get_instance(kUuidB)->task_state, TaskState::none);
  EXPECT_EQ(drv.get_instance(kUuidB).error().code, Errc::not_found) << "undefined";
  EXPECT_FALSE(std::filesystem::exists(half_dir));
  EXPECT_EQ(store.get_instance(done->uuid)->vm_state, VmState::active);
  EXPECT_EQ(drv.get_instance(done->uuid)->power_state, PowerState::running);
  EXPECT_TRUE(std::filesystem::exists(drv.instance_dir(done->uuid) + "/disk"));
}

TEST(DomainXml, RoundTripsWhatVirtcapReadsBack) {
  DomainParams p{kUuidA, "web <1>",          "img", "test", 256, 2, "/x/disk", "/x/console.log",
                 "",     "52:54:00:aa:bb:cc"};
  auto facts = parse_domain_xml(domain_xml(p));
  ASSERT_TRUE(facts.ok());
  EXPECT_TRUE(facts->ours);
  EXPECT_EQ(facts->name, "web <1>");
  EXPECT_EQ(facts->memory_mb, 256);
  EXPECT_EQ(facts->vcpus, 2);
  ASSERT_EQ(facts->interfaces.size(), 1u);
  EXPECT_EQ(facts->interfaces[0].mac, "52:54:00:aa:bb:cc");
  EXPECT_FALSE(parse_domain_xml("<domain><name>").ok());
}

}  // namespace
}  // namespace virtcap::libvirt
