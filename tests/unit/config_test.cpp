#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "config/config.h"

namespace virtcap::config {
namespace {

std::string error_of(std::string_view text) {
  auto r = parse(text, "/etc/virtcap/test.toml");
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.error().message;
}

TEST(Config, DefaultsMatchTheDocumentedValues) {
  Config c;
  EXPECT_EQ(c.compute.driver, "libvirt");
  EXPECT_EQ(c.libvirt.uri, "test:///default");
  EXPECT_EQ(c.images_path(), "/var/lib/virtcap/images");
  EXPECT_EQ(c.image_cache.manager_interval, 2400);
  EXPECT_EQ(c.image_cache.subdirectory_name, "_base");
  EXPECT_TRUE(c.image_cache.remove_unused_base_images);
  EXPECT_EQ(c.image_cache.remove_unused_original_minimum_age_seconds, 86400);
  EXPECT_EQ(c.image_cache.remove_unused_resized_minimum_age_seconds, 3600);
  EXPECT_EQ(c.defaults.state_path, "/var/lib/virtcap");
  EXPECT_EQ(c.instances_path(), "/var/lib/virtcap/instances");
  EXPECT_EQ(c.base_dir(), "/var/lib/virtcap/instances/_base");
  EXPECT_FALSE(c.host().empty());
}

TEST(Config, ParsesEverySection) {
  auto r = parse(R"(
[DEFAULT]
host = "compute-7"
state_path = "/srv/virtcap"
instances_path = "/nfs/instances"

[compute]
driver = "fake_imagecache"

[image_cache]
manager_interval = 0
subdirectory_name = "_cache"
remove_unused_base_images = false
)",
                 "t.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->host(), "compute-7");
  EXPECT_EQ(r->instances_path(), "/nfs/instances");
  EXPECT_EQ(r->compute.driver, "fake_imagecache");
  EXPECT_EQ(r->image_cache.manager_interval, 0);
  EXPECT_EQ(r->base_dir(), "/nfs/instances/_cache");
  EXPECT_FALSE(r->image_cache.remove_unused_base_images);
  EXPECT_EQ(r->source, "t.toml");
}

TEST(Config, OverlayWriterIsNativeByDefaultAndOnlyNativeOrQemuImg) {
  EXPECT_EQ(Config{}.libvirt.overlay_writer, "native");
  auto r = parse("[libvirt]\noverlay_writer = \"qemu-img\"\n", "t.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->libvirt.overlay_writer, "qemu-img");
  const auto msg = error_of("[libvirt]\noverlay_writer = \"qemu_img\"\n");
  EXPECT_NE(msg.find("overlay_writer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("native"), std::string::npos) << msg;
}

TEST(Config, UnknownKeyNamesFileLineKeyAndTheKnownKeys) {
  const auto msg = error_of("[image_cache]\nmanager_interval = 10\nmanager_intervall = 5\n");
  EXPECT_NE(msg.find("/etc/virtcap/test.toml:3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[image_cache] manager_intervall"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown option"), std::string::npos) << msg;
  EXPECT_NE(msg.find("subdirectory_name"), std::string::npos) << msg;
}

TEST(Config, UnknownSectionIsAnError) {
  const auto msg = error_of("[imagecache]\nmanager_interval = 10\n");
  EXPECT_NE(msg.find(":1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown section"), std::string::npos) << msg;
  EXPECT_NE(msg.find("image_cache"), std::string::npos) << msg;
}

TEST(Config, WrongTypeSaysWhatWasExpected) {
  const auto msg = error_of("[image_cache]\n\nmanager_interval = \"soon\"\n");
  EXPECT_NE(msg.find(":3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected an integer, got a string"), std::string::npos) << msg;
  EXPECT_NE(error_of("[image_cache]\nremove_unused_base_images = 1\n").find("expected a boolean"), std::string::npos);
  EXPECT_NE(error_of("[compute]\ndriver = 3\n").find("expected a string"), std::string::npos);
}

TEST(Config, OutOfRangeSaysTheRange) {
  const auto msg = error_of("[image_cache]\nremove_unused_resized_minimum_age_seconds = -5\n");
  EXPECT_NE(msg.find("expected an integer from 0 to"), std::string::npos) << msg;
  EXPECT_NE(error_of("[DEFAULT]\nperiodic_fuzzy_delay = 99999999999\n").find("from 0 to 3600"), std::string::npos);
  EXPECT_NE(error_of("[DEFAULT]\nstate_path = \"relative/dir\"\n").find("absolute path"), std::string::npos);
  EXPECT_NE(error_of("[image_cache]\nsubdirectory_name = \"../etc\"\n").find("single directory name"),
            std::string::npos);
  EXPECT_NE(error_of("[compute]\ndriver = \"\"\n").find("non-empty"), std::string::npos);
}

TEST(Config, NegativeIntervalDisablesAndIsAccepted) {
  auto r = parse("[image_cache]\nmanager_interval = -1\n", "t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->image_cache.manager_interval, -1);
}

TEST(Config, InvalidTomlNamesTheLine) {
  const auto msg = error_of("[DEFAULT]\nhost = \"unterminated\n");
  EXPECT_NE(msg.find("/etc/virtcap/test.toml:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid TOML"), std::string::npos) << msg;
}

TEST(Config, KeyOutsideASectionIsAnError) {
  const auto msg = error_of("host = \"x\"\n");
  EXPECT_NE(msg.find("outside any section"), std::string::npos) << msg;
  EXPECT_NE(error_of("DEFAULT = 3\n").find("must be a section"), std::string::npos);
}

TEST(Config, UnreadableFileIsAnErrorNamingIt) {
  auto r = load_file("/nonexistent/virtcap.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("/nonexistent/virtcap.toml"), std::string::npos);
  EXPECT_NE(r.error().message.find("No such file"), std::string::npos);
}

TEST(Config, LoadFileReadsARealFile) {
  auto dir = std::filesystem::temp_directory_path() / ("virtcap-config-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "v.toml").string();
  std::ofstream(path) << "[compute]\ndriver = \"fake_minimal\"\n";
  auto r = load_file(path);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->compute.driver, "fake_minimal");
  EXPECT_EQ(r->source, path);
  std::filesystem::remove_all(dir);
}

TEST(Config, EffectiveTomlRoundTrips) {
  auto r = parse("[DEFAULT]\nhost = \"h \\\"q\\\"\"\n[image_cache]\nmanager_interval = 17\n", "t");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto text = to_toml(*r);
  auto again = parse(text, "roundtrip");
  ASSERT_TRUE(again.ok()) << again.error().message << "\n" << text;
  EXPECT_EQ(again->host(), "h \"q\"");
  EXPECT_EQ(again->image_cache.manager_interval, 17);
  EXPECT_EQ(again->compute.driver, r->compute.driver);
}

TEST(Config, DocsListEveryOption) {
  const auto md = docs_markdown();
  for (const char* key : {"host", "state_path", "instances_path", "driver", "manager_interval", "subdirectory_name",
                          "remove_unused_base_images", "remove_unused_original_minimum_age_seconds",
                          "remove_unused_resized_minimum_age_seconds", "sync_power_state_interval"})
    EXPECT_NE(md.find(std::string("`") + key + "`"), std::string::npos) << key;
}

}  // namespace
}  // namespace virtcap::config
