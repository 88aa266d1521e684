// The agent over HTTP on 127.0.0.1, driven with the real client: the
// walkthrough, bad input with its documented status codes, tokens, concurrent
// deletes, and graceful shutdown. Store, hypervisor and disks are checked to
// agree afterwards.
#include <gtest/gtest.h>

#include <thread>

#include "support/agent_process.h"

namespace virtcap::testing {
namespace {

using nlohmann::json;

TEST(Api, WalkthroughBootListRefuseDeletePassTasks) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();

  auto health = c.request("GET", "/healthz");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->at("status"), "ok");
  auto caps = c.request("GET", "/v1/capabilities");
  ASSERT_TRUE(caps.ok());
  EXPECT_EQ(caps->at("driver"), "libvirt");

  json a = {{"name", "web-1"}, {"image", "sample-a"}, {"memory_mb", 64}};
  json b = {{"name", "web-2"}, {"image", "sample-b"}};
  auto r1 = c.call("POST", "/v1/instances", &a);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->status, 201) << r1->raw;
  auto r2 = c.request("POST", "/v1/instances", &b);
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  auto list = c.request("GET", "/v1/instances");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->at("instances").size(), 2u);
  auto shown = c.request("GET", "/v1/instances/web-1");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->at("power_state"), "running");

  // attach-interface is refused up front, naming the capability.
  json nic = json::object();
  auto refused = c.call("POST", "/v1/instances/web-1/interfaces", &nic);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 409);
  EXPECT_EQ(refused->body["error"]["code"], "capability_not_supported");
  EXPECT_EQ(refused->body["error"]["capability"], "supports_attach_interface");

  // Delete web-2; a dry-run pass shows sample-b's base unused, sample-a's in use.
  auto del = c.request("DELETE", "/v1/instances/" + r2->at("uuid").get<std::string>());
  ASSERT_TRUE(del.ok()) << del.error().message;
  json dry = {{"dry_run", true}};
  auto pass = c.request("POST", "/v1/image-cache/pass", &dry);
  ASSERT_TRUE(pass.ok()) << pass.error().message;
  EXPECT_TRUE(pass->at("dry_run").get<bool>());
  std::map<std::string, std::string> states;
  for (const auto& f : pass->at("files")) states[f.at("name")] = f.at("state");
  EXPECT_EQ(states[sha1_hex_for_test("sample-a")], "in_use");
  EXPECT_EQ(states[sha1_hex_for_test("sample-b")], "unused_young");

  auto tasks = c.request("GET", "/v1/tasks");
  ASSERT_TRUE(tasks.ok());
  ASSERT_EQ(tasks->at("tasks").size(), 3u);  // + fleet_report (disabled: standalone)
  EXPECT_EQ(tasks->at("tasks")[0].at("name"), "image_cache_manager_pass");
  EXPECT_TRUE(tasks->at("tasks")[0].at("enabled").get<bool>());

  auto metrics = c.call("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->raw.find(
                "virtcap_api_requests_total{method=\"POST\",route=\"/v1/instances\",status=\"201\"} 2"),
            std::string::npos)
      << metrics->raw;
  EXPECT_NE(metrics->raw.find("virtcap_task_runs_total{task=\"sync_power_states\",result=\"ran\"}"),
            std::string::npos)
      << metrics->raw;
  expect_agreement(c, w);

  auto out = agent.stop();
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.err.find("agent stopped cleanly"), std::string::npos);
}

TEST(Api, BadInputGetsItsDocumentedStatus) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();
  struct Case {
    std::string method, path, body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"POST", "/v1/instances", "{not json", 400, "invalid_argument"},
      {"POST", "/v1/instances", "[1,2]", 400, "invalid_argument"},
      {"POST", "/v1/instances", "", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"x"})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"x","image":"sample-a","memory_mb":"big"})", 400,
       "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"x","image":"sample-a","vcpus":1.5})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"x","image":"sample-a","flavor":"m1"})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"../etc","image":"sample-a"})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"a/b","image":"sample-a"})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"ok","image":"../sample-a"})", 400, "invalid_argument"},
      {"POST", "/v1/instances", R"({"name":"ok","image":"nosuch"})", 404, "not_found"},
      {"POST", "/v1/instances", R"({"name":"ok","image":"sample-a","vcpus":100000})", 400,
       "invalid_argument"},
      {"POST", "/v1/image-cache/pass", R"({"dry_run":"yes"})", 400, "invalid_argument"},
      {"GET", "/v1/instances/00000000-0000-4000-8000-000000000000", "", 404, "not_found"},
      {"GET", "/v1/instances/nosuch", "", 404, "not_found"},
      {"DELETE", "/v1/instances/nosuch", "", 404, "not_found"},
      {"POST", "/v1/instances/nosuch/reboot", "", 404, "not_found"},
      {"GET", "/v1/nothing-here", "", 404, "not_found"},
      {"PUT", "/v1/instances", "{}", 405, "method_not_allowed"},
      {"DELETE", "/v1/capabilities", "", 405, "method_not_allowed"},
      {"PATCH", "/v1/instances/x", "{}", 405, "method_not_allowed"},
      {"POST", "/v1/instances", std::string(2 * 1024 * 1024, ' '), 413, "payload_too_large"},
  };
  for (const auto& k : cases) {
    auto r = c.call_raw(k.method, k.path, k.body);
    ASSERT_TRUE(r.ok()) << k.method << " " << k.path;
    EXPECT_EQ(r->status, k.status) << k.method << " " << k.path << " " << k.body.substr(0, 60) << " -> "
                                   << r->raw;
    ASSERT_TRUE(r->body.is_object()) << "every error is JSON: " << r->raw;
    EXPECT_EQ(r->body["error"]["code"], k.code) << k.method << " " << k.path;
    EXPECT_FALSE(r->body["error"]["message"].get<std::string>().empty());
  }
  auto put = c.call_raw("PUT", "/v1/instances", "{}");
  EXPECT_NE(put->raw.find("allowed: GET, POST"), std::string::npos);
  // A taken name is a conflict.
  json a = {{"name", "dup"}, {"image", "sample-a"}};
  ASSERT_EQ(c.call("POST", "/v1/instances", &a)->status, 201);
  auto dup = c.call("POST", "/v1/instances", &a);
  EXPECT_EQ(dup->status, 409);
  EXPECT_EQ(dup->body["error"]["code"], "already_exists");
  // Nothing the bad requests touched was lost or left behind.
  expect_agreement(c, w);
  EXPECT_EQ(c.request("GET", "/v1/instances")->at("instances").size(), 1u);
}

TEST(Api, TokenIsRequiredWhenSetAndNonLoopbackNeedsOne) {
  AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto anon = agent.client();
  auto r = anon.call("GET", "/v1/instances");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->body["error"]["code"], "unauthorized");
  EXPECT_EQ(agent.client("wrong").call("GET", "/healthz")->status, 401);
  EXPECT_EQ(agent.client("s3cret").call("GET", "/v1/instances")->status, 200);

  AgentWorld open("[api]\nlisten = \"0.0.0.0:0\"\n");
  Agent refused(open.config);
  ASSERT_FALSE(refused.running());
  EXPECT_EQ(refused.exit_output().exit_code, 2);
  EXPECT_NE(refused.exit_output().err.find("[api] token"), std::string::npos) << refused.exit_output().err;
}

TEST(Api, ConcurrentDeletesOfOneInstance) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();
  json a = {{"name", "victim"}, {"image", "sample-a"}};
  auto rec = c.request("POST", "/v1/instances", &a);
  ASSERT_TRUE(rec.ok());
  const std::string path = "/v1/instances/" + rec->at("uuid").get<std::string>();
  std::vector<int> statuses(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      http::Client own(agent.url());
      auto r = own.call("DELETE", path);
      statuses[i] = r.ok() ? r->status : -1;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200), 1);
  for (int s : statuses) EXPECT_TRUE(s == 200 || s == 404 || s == 409) << s;
  EXPECT_EQ(c.call("GET", path)->status, 404);
  expect_agreement(c, w);
}

TEST(Api, StateSurvivesARestartInTheSqliteStore) {
  AgentWorld w;
  std::string uuid;
  {
    Agent agent(w.config);
    ASSERT_TRUE(agent.running()) << agent.exit_output().err;
    json a = {{"name", "durable"}, {"image", "sample-a"}};
    auto rec = agent.client().request("POST", "/v1/instances", &a);
    ASSERT_TRUE(rec.ok());
    uuid = rec->at("uuid");
    EXPECT_EQ(agent.stop().exit_code, 0);
  }
  Agent again(w.config);
  ASSERT_TRUE(again.running()) << again.exit_output().err;
  auto shown = again.client().request("GET", "/v1/instances/" + uuid);
  ASSERT_TRUE(shown.ok());
  // test:///default lives in the agent's process: the new agent's hypervisor
  // never saw the domain, so the instance is marked lost - never deleted.
  EXPECT_EQ(shown->at("vm_state"), "lost");
  EXPECT_TRUE(fs::exists(w.dir.sub("instances/" + uuid + "/disk"))) << "the disk is kept";
}

TEST(Api, ACorruptDatabaseIsAClearErrorAndIsNotRecreated) {
  AgentWorld w;
  const std::string garbage(8192, 'G');
  w.dir.write("virtcap.db", garbage);
  Agent agent(w.config);
  ASSERT_FALSE(agent.running());
  EXPECT_EQ(agent.exit_output().exit_code, 1);
  EXPECT_NE(agent.exit_output().err.find("virtcap.db"), std::string::npos) << agent.exit_output().err;
  EXPECT_EQ(read_file(w.dir.sub("virtcap.db")), garbage);
}

}  // namespace
}  // namespace virtcap::testing

// A second agent on a port in use: AgentOps.TakenPortRefusedBeforeTheStore
// (exit 2, before the store is opened).
