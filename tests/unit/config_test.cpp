#include "config/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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
  EXPECT_EQ(Config{}.libvirt.overlay_writer, OverlayWriter::native);
  auto r = parse("[libvirt]\noverlay_writer = \"qemu-img\"\n", "t.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->libvirt.overlay_writer, OverlayWriter::qemu_img);
  const auto msg = error_of("[libvirt]\noverlay_writer = \"qemu_img\"\n");
  EXPECT_NE(msg.find("overlay_writer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected one of: native,qemu-img, got \"qemu_img\""), std::string::npos) << msg;
}

TEST(Config, EveryFiniteChoiceIsAnEnumParsedOnceNamingTheAllowedValues) {
  auto r = parse(
      "[DEFAULT]\nlog_level = \"warning\"\nlog_format = \"json\"\n[store]\nbackend = \"memory\"\n"
      "[fleet_service]\nanonymous_role = \"operator\"\n",
      "t.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->defaults.log_level, LogLevel::warning);
  EXPECT_EQ(r->defaults.log_format, LogFormat::json);
  EXPECT_EQ(r->store.backend, StoreBackend::memory);
  EXPECT_EQ(r->fleet_service.anonymous_role, AnonymousRole::operator_);
  EXPECT_NE(to_toml(*r).find("anonymous_role = 'operator'"), std::string::npos) << to_toml(*r);
  for (const auto& [text, allowed] : std::vector<std::pair<std::string, std::string>>{
           {"[DEFAULT]\nlog_level = \"warn\"\n", "trace,debug,info,warning,error,critical,off"},
           {"[DEFAULT]\nlog_format = \"xml\"\n", "text,json"},
           {"[store]\nbackend = \"postgres\"\n", "sqlite,memory"},
           {"[fleet_service]\nanonymous_role = \"agent\"\n", "none,reader,operator"}}) {
    const auto msg = error_of(text);
    EXPECT_NE(msg.find("expected one of: " + allowed + ", got"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of("[store]\nbackend = 1\n").find("expected a string, got an integer"), std::string::npos);
}

// A valid value other than the default, for every kind of option check.
std::string pick(const check::abs_path&, const std::string&, const std::string& key) {
  return "/srv/t/" + key;
}
std::string pick(const check::dir_name&, const std::string&, const std::string& key) { return "_" + key; }
std::string pick(const check::origin_list&, const std::string&, const std::string&) {
  return "https://a.example,http://b.example:8080";
}
std::string pick(const check::listen_address&, const std::string&, const std::string&) {
  return "127.0.0.1:18774";
}
std::string pick(const check::non_empty&, const std::string&, const std::string& key) {
  return "value-" + key;
}
std::string pick(const check::any&, const std::string&, const std::string& key) { return "value-" + key; }
std::string pick(const check::group_name&, const std::string&, const std::string&) { return "root"; }
std::string pick(const check::token&, const std::string&, const std::string& key) { return "token-" + key; }
std::string pick(const check::http_url&, const std::string&, const std::string&) {
  return "https://fleet.example:8778";
}
template <class E>
E pick(const check::choice<E>&, E def, const std::string&) {
  for (const auto& [value, name] : Choice<E>::kNames)
    if (value != def) return value;
  return def;  // a single choice: the test then reports "equals the default"
}
int pick(const check::range& r, int def, const std::string&) {
  return static_cast<int>(def + 1 <= r.hi ? def + 1 : def - 1);
}
bool pick(const check::any&, bool def, const std::string&) { return !def; }
double pick(const check::positive_number& c, double def, const std::string&) {
  return def + 0.5 <= c.hi ? def + 0.5 : def / 2;
}

std::string toml_value(const std::string& v) { return "\"" + v + "\""; }
std::string toml_value(int v) { return std::to_string(v); }
std::string toml_value(bool v) { return v ? "true" : "false"; }
std::string toml_value(double v) { return std::to_string(v); }
template <class E>
std::string toml_value(E v) requires ChoiceEnum<E> {
  return "\"" + std::string(to_string(v)) + "\"";
}

// Every option of every section, generated from the config X-macro: a new
// option is parsed here without editing this test. Each gets a valid
// non-default value; the parsed Config must hold exactly those values.
TEST(Config, ParsesEveryOptionOfEverySectionFromTheXMacro) {
  Config want;
  std::string text;
  int options = 0, sections = 0;
#define PICK_OPTION_(T, key, def, chk, doc)                                                             \
  want_section.key = pick(chk, T(def), #key);                                                           \
  EXPECT_NE(want_section.key, T(def)) << "[" << section_name << "] " #key " needs a non-default value"; \
  EXPECT_FALSE((chk)(want_section.key).has_value()) << "[" << section_name << "] " #key;                \
  text += std::string(#key) + " = " + toml_value(want_section.key) + "\n";                              \
  ++options;
#define PICK_SECTION_(member, name, LIST, doc) \
  {                                            \
    const std::string section_name = name;     \
    auto& want_section = want.member;          \
    text += "[" + section_name + "]\n";        \
    ++sections;                                \
    LIST(PICK_OPTION_)                         \
  }
  VIRTCAP_CONFIG_SECTIONS(PICK_SECTION_)
#undef PICK_SECTION_
#undef PICK_OPTION_
  EXPECT_GE(sections, 7);
  EXPECT_GE(options, 20);

  auto r = parse(text, "every.toml");
  ASSERT_TRUE(r.ok()) << r.error().message << "\n" << text;
  int compared = 0;
#define COMPARE_OPTION_(T, key, def, chk, doc)                                                   \
  EXPECT_EQ(got_section.key, want_section.key) << "[" << section_name << "] " #key "\n" << text; \
  ++compared;
#define COMPARE_SECTION_(member, name, LIST, doc) \
  {                                               \
    const std::string section_name = name;        \
    const auto& want_section = want.member;       \
    const auto& got_section = r->member;          \
    LIST(COMPARE_OPTION_)                         \
  }
  VIRTCAP_CONFIG_SECTIONS(COMPARE_SECTION_)
#undef COMPARE_SECTION_
#undef COMPARE_OPTION_
  EXPECT_EQ(compared, options);
  EXPECT_EQ(r->api.token, "token-token");
  EXPECT_EQ(r->libvirt.uri, "value-uri");
  EXPECT_EQ(r->store.backend, StoreBackend::memory);
  EXPECT_EQ(r->images_path(), "/srv/t/path");

  // And what we render parses back to the same values.
  auto again = parse(to_toml(r.value()), "again.toml");
  ASSERT_TRUE(again.ok()) << again.error().message;
  again->source = r->source;
  EXPECT_EQ(to_toml(again.value()), to_toml(r.value()));
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
  EXPECT_NE(error_of("[image_cache]\nremove_unused_base_images = 1\n").find("expected a boolean"),
            std::string::npos);
  EXPECT_NE(error_of("[compute]\ndriver = 3\n").find("expected a string"), std::string::npos);
}

TEST(Config, OutOfRangeSaysTheRange) {
  const auto msg = error_of("[image_cache]\nremove_unused_resized_minimum_age_seconds = -5\n");
  EXPECT_NE(msg.find("expected an integer from 0 to"), std::string::npos) << msg;
  EXPECT_NE(error_of("[DEFAULT]\nperiodic_fuzzy_delay = 99999999999\n").find("from 0 to 3600"),
            std::string::npos);
  EXPECT_NE(error_of("[DEFAULT]\nstate_path = \"relative/dir\"\n").find("absolute path"), std::string::npos);
  EXPECT_NE(error_of("[image_cache]\nsubdirectory_name = \"../etc\"\n").find("single directory name"),
            std::string::npos);
  EXPECT_NE(error_of("[compute]\ndriver = \"\"\n").find("non-empty"), std::string::npos);
}

// Allocation ratios: floats or integers, finite, > 0, at most 1000; the
// rendered default reads back as the same float.
// Issue 19 (small ones): a blank token is no token; an agent never sends
// its fleet token in clear text off the machine unless told to.
TEST(Config, TokensAndTheFleetUrlAreChecked) {
  for (const char* section : {"api", "fleet_service", "fleet"}) {
    for (const char* bad : {" ", "two words", "tab\\there"}) {
      const auto msg = error_of(std::string("[") + section + "]\ntoken = \"" + bad + "\"\n");
      EXPECT_NE(msg.find("a blank one is no token"), std::string::npos)
          << section << " " << bad << ": " << msg;
    }
  }
  EXPECT_TRUE(parse("[fleet]\nurl = \"http://127.0.0.1:8778\"\ntoken = \"t\"\n", "t.toml").ok());
  EXPECT_TRUE(parse("[fleet]\nurl = \"https://fleet.example\"\ntoken = \"t\"\n", "t.toml").ok());
  EXPECT_TRUE(parse("[fleet]\nurl = \"http://fleet.example\"\n", "t.toml").ok());  // no token to leak
  const auto msg = error_of("[fleet]\nurl = \"http://10.0.0.5:8778\"\ntoken = \"t\"\n");
  EXPECT_NE(msg.find("would send [fleet] token in clear text"), std::string::npos) << msg;
  EXPECT_TRUE(
      parse("[fleet]\nurl = \"http://10.0.0.5:8778\"\ntoken = \"t\"\nallow_insecure = true\n", "t.toml")
          .ok());
  for (const char* bad :
       {"fleet.example", "ftp://x", "http://", "http://h:0", "http://h/path", "http://[::1"})
    EXPECT_NE(error_of(std::string("[fleet]\nurl = \"") + bad + "\"\n").find("[fleet] url: expected"),
              std::string::npos)
        << bad;
}

TEST(Config, DiskGroupMustBeAGroupThisHostKnows) {
  EXPECT_TRUE(parse("[libvirt]\ndisk_group = \"root\"\n", "t.toml").ok());
  const auto msg = error_of("[libvirt]\ndisk_group = \"no-such-group-virtcap\"\n");
  EXPECT_NE(msg.find("[libvirt] disk_group: no group named \"no-such-group-virtcap\" on this host"),
            std::string::npos)
      << msg;
}

TEST(Config, AllocationRatiosAreCheckedNumbers) {
  EXPECT_EQ(Config{}.compute.cpu_allocation_ratio, 4.0);
  EXPECT_EQ(Config{}.compute.ram_allocation_ratio, 1.0);
  EXPECT_EQ(Config{}.compute.reserved_host_memory_mb, 512);
  auto r = parse("[compute]\ncpu_allocation_ratio = 16\nram_allocation_ratio = 1.5\n", "t.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->compute.cpu_allocation_ratio, 16.0);
  EXPECT_EQ(r->compute.ram_allocation_ratio, 1.5);
  for (const char* bad : {"0", "0.0", "-1.5", "1000.5", "nan", "inf"}) {
    const auto msg = error_of(std::string("[compute]\ndisk_allocation_ratio = ") + bad + "\n");
    EXPECT_NE(msg.find("[compute] disk_allocation_ratio: expected a number greater than 0, at most 1000"),
              std::string::npos)
        << bad << ": " << msg;
  }
  EXPECT_NE(error_of("[compute]\ncpu_allocation_ratio = \"4\"\n").find("expected a number, got a string"),
            std::string::npos);
  EXPECT_NE(error_of("[compute]\nreserved_host_memory_mb = -1\n").find("from 0 to"), std::string::npos);
  EXPECT_NE(to_toml(Config{}).find("cpu_allocation_ratio = 4.0\n"), std::string::npos);
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
  for (const char* key :
       {"host", "state_path", "instances_path", "driver", "manager_interval", "subdirectory_name",
        "remove_unused_base_images", "remove_unused_original_minimum_age_seconds",
        "remove_unused_resized_minimum_age_seconds", "sync_power_state_interval"})
    EXPECT_NE(md.find(std::string("`") + key + "`"), std::string::npos) << key;
}

}  // namespace
}  // namespace virtcap::config
