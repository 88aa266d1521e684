// Operator-facing behaviour of the agent process (issue 9).
#include <gtest/gtest.h>

#include "support/agent_process.h"

namespace virtcap {
namespace {

using testing::Agent;
using testing::AgentWorld;

// A second agent with the same state_path (even on another port) must refuse
// to start before it touches the store or the hypervisor: the first agent's
// live instances stay active (a second reconcile would mark them lost).
TEST(AgentOps, OneAgentPerStateDirectory) {
  AgentWorld w;
  Agent first(w.config);
  ASSERT_TRUE(first.running()) << first.exit_output().err;
  auto c = first.client();
  const nlohmann::json body{{"name", "web-1"}, {"image", "sample-a"}};
  auto booted = c.request("POST", "/v1/instances", &body);
  ASSERT_TRUE(booted.ok()) << booted.error().message;

  Agent second(w.config);  // listen = 127.0.0.1:0: it would get its own port
  ASSERT_FALSE(second.running());
  EXPECT_EQ(second.exit_output().exit_code, 2);
  EXPECT_NE(second.exit_output().err.find("pid " + std::to_string(first.pid())), std::string::npos)
      << second.exit_output().err;
  EXPECT_EQ(second.exit_output().err.find("reconcile"), std::string::npos) << "it touched the store";

  auto list = c.request("GET", "/v1/instances");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->at("instances").size(), 1u);
  EXPECT_EQ(list->at("instances")[0].at("vm_state"), "active");
  first.stop();
  Agent third(w.config);  // the lock is released with the process
  EXPECT_TRUE(third.running()) << third.exit_output().err;
}

}  // namespace
}  // namespace virtcap
