#include "virtcap/capabilities.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>
#include <type_traits>

#include "capabilities/render.h"
#include "virt/fake/fake_driver.h"

namespace virtcap {
namespace {

// A read on the hot path is a member load of an aggregate: no lookup, no
// virtual call, usable in constant expressions.
static_assert(std::is_aggregate_v<Capabilities>);
static_assert(std::is_trivially_copyable_v<Capabilities>);
static_assert(std::is_standard_layout_v<Capabilities>);
static_assert(fake::kFakeImageCache.has_imagecache);
static_assert(!fake::kFake.has_imagecache);
static_assert(kDefaultCapabilities == Capabilities{});

TEST(Capabilities, DefaultsAreWhatADriverThatDeclaresNothingGets) {
  const Capabilities c{};
  EXPECT_FALSE(c.has_imagecache);
  EXPECT_FALSE(c.supports_attach_interface);
  EXPECT_TRUE(c.image_formats.empty());
  EXPECT_EQ(c.virt_type, VirtType::unknown);
  EXPECT_EQ(c.max_vcpus, 0);
  for (const auto& e : caps::enumerate(c)) EXPECT_FALSE(e.overridden) << e.name;
  EXPECT_TRUE(caps::traits(c).empty());
}

TEST(Capabilities, NovaNamesArePresentWithNovasTraits) {
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"has_imagecache", ""},
      {"supports_evacuate", ""},
      {"supports_migrate_to_same_host", "COMPUTE_SAME_HOST_COLD_MIGRATE"},
      {"supports_attach_interface", "COMPUTE_NET_ATTACH_INTERFACE"},
      {"supports_device_tagging", "COMPUTE_DEVICE_TAGGING"},
      {"supports_tagged_attach_interface", "COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG"},
      {"supports_tagged_attach_volume", "COMPUTE_VOLUME_ATTACH_WITH_TAG"},
      {"supports_extend_volume", "COMPUTE_VOLUME_EXTEND"},
      {"supports_multiattach", "COMPUTE_VOLUME_MULTI_ATTACH"},
      {"supports_trusted_certs", "COMPUTE_TRUSTED_CERTS"},
      {"supports_pcpus", ""},
      {"supports_accelerators", "COMPUTE_ACCELERATORS"},
      {"supports_secure_boot", "COMPUTE_SECURITY_UEFI_SECURE_BOOT"},
      {"supports_vtpm", ""},
      {"image_formats", "COMPUTE_IMAGE_TYPE_*"},
  };
  const auto entries = caps::enumerate(kDefaultCapabilities);
  for (const auto& [name, trait] : expected) {
    auto it = std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.name == name; });
    ASSERT_NE(it, entries.end()) << name;
    EXPECT_EQ(it->trait, trait) << name;
  }
}

TEST(Capabilities, EnumerationCoversEveryDeclarationWithDocsAndUniqueNames) {
  const auto entries = caps::enumerate(kDefaultCapabilities);
  EXPECT_EQ(entries.size(), CapabilitiesSchema::size());
  std::set<std::string_view> names;
  const std::regex trait_re("^[A-Z][A-Z0-9_]*(\\*)?$");
  for (const auto& e : entries) {
    EXPECT_FALSE(e.doc.empty()) << e.name;
    EXPECT_TRUE(names.insert(e.name).second) << e.name;
    if (!e.trait.empty()) {
      EXPECT_TRUE(std::regex_match(std::string(e.trait), trait_re)) << e.trait;
    }
  }
}

TEST(Capabilities, OverriddenIsDerivedFromTheDefault) {
  const auto entries = caps::enumerate(fake::kFake);
  std::set<std::string_view> overridden;
  for (const auto& e : entries)
    if (e.overridden) overridden.insert(e.name);
  EXPECT_EQ(overridden, (std::set<std::string_view>{"supports_attach_interface", "supports_device_tagging",
                                                    "supports_tagged_attach_interface", "image_formats",
                                                    "virt_type", "max_vcpus"}));
}

TEST(Capabilities, TraitsComeFromTrueBoolsAndSetMembers) {
  EXPECT_EQ(caps::traits(fake::kFake),
            (std::vector<std::string>{"COMPUTE_DEVICE_TAGGING", "COMPUTE_IMAGE_TYPE_QCOW2",
                                      "COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_NET_ATTACH_INTERFACE",
                                      "COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG"}));
  const auto all = caps::all_traits();
  EXPECT_NE(std::find(all.begin(), all.end(), "COMPUTE_IMAGE_TYPE_PLOOP"), all.end());
  EXPECT_NE(std::find(all.begin(), all.end(), "COMPUTE_SECURITY_UEFI_SECURE_BOOT"), all.end());
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), all.size()) << "traits must be unique";
}

TEST(Capabilities, JsonHasTheDocumentedShape) {
  const auto j = caps::to_json("fake", fake::kFake);
  EXPECT_EQ(j.at("driver"), "fake");
  ASSERT_EQ(j.at("capabilities").size(), CapabilitiesSchema::size());
  for (const auto& c : j.at("capabilities")) {
    for (const char* k : {"name", "type", "value", "default", "overridden", "trait", "doc"})
      EXPECT_TRUE(c.contains(k)) << k;
  }
  const auto& formats = j.at("capabilities")[14];
  EXPECT_EQ(formats.at("name"), "image_formats");
  EXPECT_EQ(formats.at("type"), "set<image_format>");
  EXPECT_EQ(formats.at("value"), nlohmann::json({"raw", "qcow2"}));
  EXPECT_EQ(formats.at("default"), nlohmann::json::array());
  EXPECT_TRUE(formats.at("overridden"));
  EXPECT_EQ(j.at("traits").size(), 5u);
}

TEST(Capabilities, TableAndMarkdownListEveryCapability) {
  const auto table = caps::to_table("fake", fake::kFake);
  const auto md = caps::to_markdown("fake", fake::kFake);
  for (const auto& e : caps::enumerate(fake::kFake)) {
    EXPECT_NE(table.find(e.name), std::string::npos) << e.name;
    EXPECT_NE(md.find("`" + std::string(e.name) + "`"), std::string::npos) << e.name;
  }
  EXPECT_NE(table.find("COMPUTE_NET_ATTACH_INTERFACE"), std::string::npos);
}

TEST(ImageFormats, SetSemantics) {
  ImageFormats f{ImageFormat::qcow2, ImageFormat::qcow2};
  EXPECT_TRUE(f.contains(ImageFormat::qcow2));
  EXPECT_FALSE(f.contains(ImageFormat::raw));
  f.insert(ImageFormat::raw);
  EXPECT_EQ(f, (ImageFormats{ImageFormat::raw, ImageFormat::qcow2}));
  EXPECT_EQ(image_format_from_string("vhdx"), ImageFormat::vhdx);
  EXPECT_EQ(image_format_from_string("exe"), std::nullopt);
}

}  // namespace
}  // namespace virtcap
