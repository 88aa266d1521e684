// The test support's own deadlines: a wait on the agent's log that is never
// satisfied ends at its deadline, kills the agent and says why, instead of
// hanging the suite.
#include <gtest/gtest.h>

#include "support/agent_process.h"

namespace virtcap::testing {
namespace {

TEST(TestSupport, AWaitForALogLineThatNeverComesEndsAtItsDeadline) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(agent.wait_for_log("a line the agent never writes", std::chrono::seconds(1)));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::seconds(1));
  EXPECT_LT(waited, std::chrono::seconds(20));
  ASSERT_FALSE(agent.running());
  EXPECT_EQ(agent.exit_output().term_signal, SIGKILL);
  EXPECT_NE(agent.exit_output().err.find("no log line with 'a line the agent never writes' within 1 s"),
            std::string::npos)
      << agent.exit_output().err;
}

}  // namespace
}  // namespace virtcap::testing
