// The capability gate over HTTP: a driver without has_imagecache refuses a
// direct image-cache pass (POST /v1/image-cache/pass, which does not go
// through the periodic task) with 409 capability_not_supported, and the
// pass never runs.
#include <gtest/gtest.h>

#include "support/agent_process.h"

namespace virtcap::testing {
namespace {

TEST(ApiCapability, ImageCachePassWithoutHasImagecacheIs409AndRunsNothing) {
  AgentWorld w("[compute]\ndriver = \"fake\"\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();
  auto caps = c.request("GET", "/v1/capabilities");
  ASSERT_TRUE(caps.ok()) << caps.error().message;
  ASSERT_EQ(caps->at("driver"), "fake") << caps->dump();

  for (const bool dry_run : {true, false}) {
    const nlohmann::json body = {{"dry_run", dry_run}};
    auto r = c.call("POST", "/v1/image-cache/pass", &body);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->status, 409) << r->raw;
    EXPECT_EQ(r->body["error"]["code"], "capability_not_supported") << r->raw;
    EXPECT_EQ(r->body["error"]["capability"], "has_imagecache") << r->raw;
  }
  auto metrics = c.call("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->raw.find("\nvirtcap_image_cache_passes_total 0\n"), std::string::npos) << metrics->raw;
  EXPECT_FALSE(fs::exists(w.dir.sub("instances/_base"))) << "no pass touched the image cache";
  auto tasks = c.request("GET", "/v1/tasks");
  ASSERT_TRUE(tasks.ok());
  EXPECT_EQ(tasks->at("tasks")[0].at("name"), "image_cache_manager_pass");
  EXPECT_FALSE(tasks->at("tasks")[0].at("enabled").get<bool>()) << tasks->dump();
}

}  // namespace
}  // namespace virtcap::testing
