// The shared helpers of src/common/: time, strings, uuid.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/strings.h"
#include "common/time.h"
#include "common/uuid.h"

namespace virtcap {
namespace {

TEST(CommonUuid, OnlyTheCanonicalLowerCaseFormIsAUuid) {
  EXPECT_TRUE(is_uuid("0123abcd-4567-89ef-0a1b-2c3d4e5f6789"));
  EXPECT_TRUE(is_uuid("00000000-0000-0000-0000-000000000000"));
  for (const char* bad : {"", "0123ABCD-4567-89ef-0a1b-2c3d4e5f6789", "0123abcd-4567-89ef-0a1b-2c3d4e5f678",
                          "0123abcd-4567-89ef-0a1b-2c3d4e5f67890", "0123abcd_4567-89ef-0a1b-2c3d4e5f6789",
                          "0123abcd-4567-89ef-0a1b-2c3d4e5f678g", "{123abcd-4567-89ef-0a1b-2c3d4e5f678}",
                          "0123abcd04567-89ef-0a1b-2c3d4e5f6789", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"})
    EXPECT_FALSE(is_uuid(bad)) << bad;
}

TEST(CommonStrings, JoinSeparatesItemsAndProjects) {
  EXPECT_EQ(join(std::vector<std::string>{}), "");
  EXPECT_EQ(join(std::vector<std::string>{"a"}), "a");
  EXPECT_EQ(join(std::vector<std::string>{"a", "", "c"}), "a, , c");
  EXPECT_EQ(join(std::vector<const char*>{"x", "y"}, ","), "x,y");
  struct Named {
    std::string name;
  };
  EXPECT_EQ(join(std::vector<Named>{{"p"}, {"q"}}, " | ", &Named::name), "p | q");
  const std::map<std::string, int> m{{"k1", 1}, {"k2", 2}};
  EXPECT_EQ(join(m, ", ", [](const auto& kv) { return kv.first + "=" + std::to_string(kv.second); }),
            "k1=1, k2=2");
}

TEST(CommonTime, SecondsAndMillisecondsReadTheSameClock) {
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const auto ms = now_ms();
  const auto s = now_seconds();
  const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  EXPECT_LE(before, ms);
  EXPECT_LE(ms, after);
  EXPECT_GE(s, ms / 1000);
  EXPECT_LE(s, after / 1000);
  EXPECT_GT(s, 1700000000) << "after 2023";
}

}  // namespace
}  // namespace virtcap
