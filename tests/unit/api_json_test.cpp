#include <gtest/gtest.h>

#include "api/json.h"

namespace virtcap::api {
namespace {

TEST(ApiJson, HandWrittenInstanceListEqualsTheGenericRendering) {
  std::vector<InstanceRecord> list(3);
  list[0].uuid = "u-1";
  list[0].name = "web \"quoted\" \\ back";
  list[0].host = "h";
  list[0].image_id = "img\n\t\x01";
  list[0].task_state = "spawning";
  list[1].uuid = "u-2";
  list[1].deleted_at = 42;
  list[1].created_at = -5;
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : list) arr.push_back(to_json(r));
  EXPECT_EQ(instances_json(list), nlohmann::json({{"instances", arr}}).dump());
  EXPECT_EQ(instances_json({}), nlohmann::json({{"instances", nlohmann::json::array()}}).dump());
}

TEST(ApiJson, RequestBodiesAreValidatedFieldByField) {
  auto ok = parse_boot_request(R"({"name":"a","image":"b","vcpus":2})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->memory_mb, 512);
  EXPECT_EQ(ok->vcpus, 2);
  EXPECT_NE(parse_boot_request(R"({"name":"a"})").error().message.find("'image' is required"), std::string::npos);
  EXPECT_NE(parse_boot_request(R"({"name":"a","image":"b","memory_mb":8})").error().message.find("memory_mb"),
            std::string::npos);
  EXPECT_NE(parse_boot_request(R"({"name":"a","image":"b","x":1})").error().message.find("unknown field 'x'"),
            std::string::npos);
  EXPECT_FALSE(parse_interface_request(R"({"mac":"zz"})").ok());
  EXPECT_TRUE(parse_interface_request("").ok());
  EXPECT_EQ(parse_pass_request(R"({"dry_run":true})").value(), true);
  EXPECT_FALSE(parse_pass_request(R"({"dry_run":1})").ok());
  EXPECT_FALSE(parse_empty_request(R"({"force":true})").ok());
  EXPECT_EQ(http_status(Errc::capability_not_supported), 409);
  EXPECT_EQ(http_status(Errc::hypervisor_unavailable), 503);
}

}  // namespace
}  // namespace virtcap::api
