// The audit line helper: one line per operation, whatever way it ends, with
// its values as fields of a JSON line and in a text line's message.
#include "common/audit.h"

#include <gtest/gtest.h>

#include <sstream>
#include <stdexcept>

#include "support/test_support.h"

namespace virtcap {
namespace {

// The lines logged while fn runs, with `format`, from a log file.
std::vector<std::string> logged(logging::LogFormat format, const std::function<void()>& fn) {
  testing::TempDir d("virtcap-audit");
  const std::string file = d.sub("log");
  EXPECT_TRUE(logging::setup({logging::LogLevel::info, format, file}).ok());
  fn();
  EXPECT_TRUE(logging::setup({}).ok());  // back to stderr, text
  std::vector<std::string> out;
  std::istringstream in(testing::read_file(file));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Audit, OneJsonLinePerOperationWithItsFields) {
  const auto lines = logged(logging::LogFormat::json, [] {
    {
      audit::Scope a("reboot", "u-1", "web-1");
      Status failed = make_error(Errc::not_found, "no such \xff instance");
      EXPECT_FALSE(a.done(failed).ok());
      a.ok();  // a second outcome logs nothing
    }
    try {
      audit::Scope a("boot", "", "web-2");
      a.field("message", "must not replace the line's message");
      a.field("bytes", 12);
      throw std::runtime_error("interrupted");
    } catch (const std::runtime_error&) {
    }
    audit::Scope nothing("reconcile");
    nothing.dismiss();
  });
  ASSERT_EQ(lines.size(), 2u);
  const auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first.at("audit"), true);
  EXPECT_EQ(first.at("operation"), "reboot");
  EXPECT_EQ(first.at("uuid"), "u-1");
  EXPECT_EQ(first.at("name"), "web-1");
  EXPECT_EQ(first.at("outcome"), "failed");
  EXPECT_EQ(first.at("reason"), "not_found: no such \xef\xbf\xbd instance");  // escaped, not thrown
  EXPECT_TRUE(first.at("duration_ms").is_number_integer());
  const auto second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(second.at("operation"), "boot");
  EXPECT_TRUE(second.at("uuid").is_null());
  EXPECT_EQ(second.at("outcome"), "failed");
  EXPECT_NE(second.at("reason").get<std::string>().find("without an outcome"), std::string::npos);
  EXPECT_EQ(second.at("bytes"), 12);
  EXPECT_EQ(
      second.at("message").get<std::string>().rfind("audit operation=boot name=web-2 outcome=failed", 0), 0u)
      << second.dump();
}

TEST(Audit, TextLinesCarryTheValuesInTheMessage) {
  const auto lines = logged(logging::LogFormat::text, [] {
    audit::Scope a("image_cache_remove");
    a.field("file", "/x/a b");
    a.ok();
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find(" info audit operation=image_cache_remove outcome=ok duration_ms="),
            std::string::npos)
      << lines[0];
  EXPECT_NE(lines[0].find(" file=\"/x/a b\""), std::string::npos) << lines[0];
}

// A name from a request can neither end the text line (a forged line after
// it) nor flood the log.
TEST(Audit, RequestValuesCannotForgeOrFloodLines) {
  const std::string forged = "x\n2026-11-26T00:00:00.000+00:00 info audit operation=delete outcome=ok";
  const auto lines = logged(logging::LogFormat::text, [&] {
    audit::Scope a("boot", "", forged);
    a.failed("invalid name");
    audit::Scope b("boot", "", std::string(100000, 'n'));
    b.ok();
  });
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("name=\"x\\n2026"), std::string::npos) << lines[0];
  EXPECT_LT(lines[1].size(), 512u);
  EXPECT_NE(lines[1].find("...(100000 bytes)"), std::string::npos);
}

}  // namespace
}  // namespace virtcap
