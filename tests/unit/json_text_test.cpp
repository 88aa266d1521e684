// dump_json never throws on text from outside: invalid UTF-8 is replaced.
#include "common/json_text.h"

#include <gtest/gtest.h>

namespace virtcap {
namespace {

TEST(JsonText, InvalidUtf8IsReplacedNotThrown) {
  const nlohmann::json j = {{"path", std::string("/\n\xff\xfe", 4)}, {"ok", "caf\xc3\xa9"}};
  std::string out;
  ASSERT_NO_THROW(out = dump_json(j));
  EXPECT_EQ(out, "{\"ok\":\"caf\xc3\xa9\",\"path\":\"/\\n\xef\xbf\xbd\xef\xbf\xbd\"}");
  EXPECT_NO_THROW(nlohmann::json::parse(out)) << "the replaced text is valid JSON";
  EXPECT_EQ(dump_json(nlohmann::json{{"a", 1}}, 2), "{\n  \"a\": 1\n}");
}

}  // namespace
}  // namespace virtcap
