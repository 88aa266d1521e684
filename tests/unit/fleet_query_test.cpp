// The fleet model's name rules and the Placement-style query parser.
#include <gtest/gtest.h>

#include <random>

#include "fleet/model.h"
#include "fleet/query.h"

using namespace virtcap;
using namespace virtcap::fleet;

namespace {

Query parse_ok(const QueryParams& p) {
  auto q = parse_query(p);
  EXPECT_TRUE(q.ok()) << (q.ok() ? "" : q.error().message);
  return q.ok() ? *q : Query{};
}

std::string parse_error(const QueryParams& p) {
  auto q = parse_query(p);
  EXPECT_FALSE(q.ok());
  if (q.ok()) return "";
  EXPECT_EQ(q.error().code, Errc::invalid_argument);
  return q.error().message;
}

}  // namespace

TEST(FleetModel, TraitNameRules) {
  EXPECT_TRUE(check_trait_name("COMPUTE_IMAGE_TYPE_QCOW2").ok());
  EXPECT_TRUE(check_trait_name("HW_CPU_X86_AVX2").ok());
  EXPECT_FALSE(check_trait_name("").ok());
  EXPECT_FALSE(check_trait_name("compute_lower").ok());
  EXPECT_FALSE(check_trait_name("A-B").ok());
  EXPECT_FALSE(check_trait_name(std::string(256, 'A')).ok());
  EXPECT_TRUE(check_operator_trait_name("CUSTOM_MAINTENANCE").ok());
  EXPECT_FALSE(check_operator_trait_name("CUSTOM_").ok());
  EXPECT_FALSE(check_operator_trait_name("COMPUTE_X").ok());
  EXPECT_FALSE(check_operator_trait_name("CUSTOM_bad").ok());
  EXPECT_FALSE(check_agent_trait_name("CUSTOM_X").ok());
  EXPECT_TRUE(check_agent_trait_name("COMPUTE_X").ok());
}

TEST(FleetModel, ErrorTextIsEscapedAndBounded) {
  auto st = check_trait_name(std::string("A\xff\n") + std::string(500, 'B'));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("\\xff\\x0a"), std::string::npos) << st.error().message;
  EXPECT_LT(st.error().message.size(), 300U);
}

TEST(FleetModel, ResourceClassesAndFreeCapacity) {
  EXPECT_EQ(*resource_class_from_string("MEMORY_MB"), ResourceClass::memory_mb);
  auto bad = resource_class_from_string("GPU");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("\"GPU\""), std::string::npos);
  EXPECT_EQ((Inventory{16, 2, 4.0, 10}.free()), 46);  // (16-2)*4-10
  EXPECT_EQ((Inventory{10, 0, 1.5, 0}.free()), 15);
  EXPECT_EQ((Inventory{3, 0, 1.0, 5}.free()), -2);
  EXPECT_FALSE(check_inventory(ResourceClass::vcpu, {-1, 0, 1.0, 0}).ok());
  EXPECT_FALSE(check_inventory(ResourceClass::vcpu, {4, 5, 1.0, 0}).ok());
  EXPECT_FALSE(check_inventory(ResourceClass::vcpu, {4, 0, 0.0, 0}).ok());
  EXPECT_FALSE(check_inventory(ResourceClass::vcpu, {4, 0, 1.0, -3}).ok());
}

TEST(FleetQuery, ParsesPlacementSyntax) {
  auto q = parse_ok({{"required", "B,A,!C"},
                     {"required", "D"},
                     {"required", "in:F,E"},
                     {"required", "in:G"},
                     {"resources", "VCPU:2,MEMORY_MB:2048,DISK_GB:10"},
                     {"limit", "5"},
                     {"include_down", "true"}});
  EXPECT_EQ(q.required, (std::vector<std::string>{"A", "B", "D"}));
  EXPECT_EQ(q.forbidden, (std::vector<std::string>{"C"}));
  ASSERT_EQ(q.any_of.size(), 2U);
  EXPECT_EQ(q.any_of[0], (std::vector<std::string>{"E", "F"}));
  EXPECT_EQ(q.any_of[1], (std::vector<std::string>{"G"}));
  EXPECT_EQ(q.resources[0], 2);
  EXPECT_EQ(q.resources[1], 2048);
  EXPECT_EQ(q.resources[2], 10);
  EXPECT_EQ(q.limit, 5U);
  EXPECT_TRUE(q.include_down);
  auto d = parse_ok({});
  EXPECT_EQ(d.limit, kDefaultLimit);
  EXPECT_FALSE(d.include_down);
}

TEST(FleetQuery, MalformedTraitNamesAreNamed) {
  EXPECT_NE(parse_error({{"required", "A,bad-name"}}).find("\"bad-name\""), std::string::npos);
  EXPECT_NE(parse_error({{"required", "A,,B"}}).find("empty trait"), std::string::npos);
  EXPECT_NE(parse_error({{"required", "in:A,!B"}}).find("\"!B\""), std::string::npos);
  EXPECT_NE(parse_error({{"required", "!"}}).find("empty trait"), std::string::npos);
}

TEST(FleetQuery, ResourcesErrors) {
  EXPECT_NE(parse_error({{"resources", "GPU:1"}}).find("unknown resource class \"GPU\""), std::string::npos);
  EXPECT_NE(parse_error({{"resources", "VCPU:-1"}}).find("negative"), std::string::npos);
  EXPECT_NE(parse_error({{"resources", "VCPU:x"}}).find("not a whole number"), std::string::npos);
  EXPECT_NE(parse_error({{"resources", "VCPU"}}).find("CLASS:AMOUNT"), std::string::npos);
  EXPECT_NE(parse_error({{"resources", "VCPU:1,VCPU:2"}}).find("twice"), std::string::npos);
  EXPECT_NE(parse_error({{"resources", "VCPU:99999999999999999999"}}).find("not a whole number"),
            std::string::npos);
}

TEST(FleetQuery, BoundsAreClearErrors) {
  QueryParams many;
  for (int i = 0; i < 1000; ++i) many.emplace_back("required", "T" + std::to_string(i));
  EXPECT_NE(parse_error(many).find("1000 query parameters"), std::string::npos);
  std::string long_list;
  for (int i = 0; i < 200; ++i) long_list += (i ? ",T" : "T") + std::to_string(i);
  EXPECT_NE(parse_error({{"required", long_list}}).find("trait names"), std::string::npos);
  EXPECT_NE(parse_error({{"required", std::string(100000, 'A')}}).find("100000 bytes"), std::string::npos);
  EXPECT_NE(parse_error({{"limit", "0"}}).find("limit"), std::string::npos);
  EXPECT_NE(parse_error({{"limit", "100001"}}).find("limit"), std::string::npos);
  EXPECT_NE(parse_error({{"include_down", "maybe"}}).find("include_down"), std::string::npos);
  EXPECT_NE(parse_error({{"member_of", "x"}}).find("unknown query parameter"), std::string::npos);
  EXPECT_NE(parse_error({{"required", "A,!A"}}).find("both required and forbidden"), std::string::npos);
}

// Random bytes and random near-valid parameter lists: the parser either
// accepts a query made only of valid names and amounts, or refuses with
// invalid_argument; it never throws or crashes (run under ASan/UBSan too).
TEST(FleetQuery, RandomInputIsAcceptedCleanlyOrRefused) {
  std::mt19937_64 rng(99);
  const std::string alphabet = "AZ09_!,:in-resourcesVCPUMEMORY_MBDISK_GB\xff\x00 ";
  const std::vector<std::string> keys = {"required", "resources", "limit", "include_down", "x"};
  for (int i = 0; i < 20000; ++i) {
    QueryParams p;
    for (unsigned k = 0, n = rng() % 4; k < n; ++k) {
      std::string v;
      for (unsigned c = 0, len = rng() % 24; c < len; ++c) v += alphabet[rng() % alphabet.size()];
      if (rng() % 3 == 0) v = (rng() % 2 ? "in:" : "VCPU:") + v;
      p.emplace_back(keys[rng() % keys.size()], v);
    }
    auto q = parse_query(p);
    if (!q.ok()) {
      EXPECT_EQ(q.error().code, Errc::invalid_argument);
      continue;
    }
    for (const auto* names : {&q->required, &q->forbidden})
      for (const auto& t : *names) EXPECT_TRUE(check_trait_name(t).ok()) << t;
    for (const auto& g : q->any_of)
      for (const auto& t : g) EXPECT_TRUE(check_trait_name(t).ok()) << t;
    for (const auto& r : q->resources) EXPECT_TRUE(!r || *r >= 0);
  }
}
