// The test support's own guarantees: a wait on the agent's log that is never
// satisfied ends at its deadline, kills the agent and says why, instead of
// hanging the suite; a child of the test dies with the test; a child never
// blocks on its output while the test is not looking.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "support/agent_process.h"
#include "support/drained_child.h"

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

// Polls `fd` for input at most `limit`: true when it came.
bool readable_within(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  while ((rc = ::poll(&p, 1, static_cast<int>(limit.count()))) < 0 && errno == EINTR) {
  }
  return rc == 1;
}

// A forked stand-in for the test process starts a child the way the test
// support does (die_with_parent) and is then killed with SIGKILL, as a
// crashed or timed-out test would be: the child dies too.
TEST(TestSupport, AChildOfTheTestDiesWhenTheTestIsKilled) {
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t test = ::fork();
  ASSERT_GE(test, 0);
  if (test == 0) {
    auto c = proc::Child::spawn({"sleep", "600"}, {.die_with_parent = true});
    const pid_t pid = c.ok() ? c->pid() : -1;
    (void)!::write(report[1], &pid, sizeof pid);
    for (;;) ::pause();  // until killed; the Child is never destroyed
  }
  ::close(report[1]);
  pid_t child = -1;
  const bool reported = readable_within(report[0], std::chrono::seconds(30)) &&
                        ::read(report[0], &child, sizeof child) == sizeof child;
  ::close(report[0]);
  const int child_fd = child > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, child, 0)) : -1;
  ::kill(test, SIGKILL);
  ::waitpid(test, nullptr, 0);
  ASSERT_TRUE(reported) << "the forked test did not report its child's pid within 30 s";
  ASSERT_GT(child, 0) << "the forked test could not start `sleep 600`";
  ASSERT_GE(child_fd, 0) << "pidfd_open: " << std::strerror(errno);
  const bool died = readable_within(child_fd, std::chrono::seconds(30));
  ::close(child_fd);
  if (!died) ::kill(child, SIGKILL);
  EXPECT_TRUE(died) << "the child outlived its killed parent by 30 s";
}

// 4 MiB to stderr (64 pipe-fulls) while the test reads nothing: the drain
// thread keeps the pipe empty, so the child finishes on its own.
TEST(TestSupport, AChildNeverBlocksOnAPipeTheTestIsNotReading) {
  DrainedChild dd({"dd", "if=/dev/zero", "of=/dev/stderr", "bs=65536", "count=64"});
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, dd.pid(), 0));
  ASSERT_GE(fd, 0) << "pidfd_open: " << std::strerror(errno);
  // Its exit, without reaping it: the test itself reads nothing.
  const bool exited = readable_within(fd, std::chrono::seconds(30));
  ::close(fd);
  EXPECT_TRUE(exited) << "dd blocked on its stderr: " << dd.seen(DrainedChild::Stream::err).size()
                      << " bytes drained";
  const auto o = dd.wait(std::chrono::seconds(30));
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_GE(o.err.size(), 64u * 65536u);
  EXPECT_NE(o.err.find("64+0 records out"), std::string::npos) << o.err.substr(64u * 65536u);
}

// A wait for text that never comes ends at its deadline, and says so.
TEST(TestSupport, AWaitOnAChildEndsAtItsDeadlineOrWhenTheStreamCloses) {
  DrainedChild quiet({"sleep", "600"});
  const auto t0 = DrainedChild::Clock::now();
  EXPECT_EQ(quiet.wait_for(DrainedChild::Stream::out, "never", t0 + std::chrono::milliseconds(300)),
            DrainedChild::Seen::deadline);
  EXPECT_GE(DrainedChild::Clock::now() - t0, std::chrono::milliseconds(300));
  const auto o = quiet.wait(std::chrono::milliseconds(100));
  EXPECT_TRUE(o.timed_out);
  EXPECT_EQ(o.term_signal, SIGKILL);

  DrainedChild echo({"echo", "hello"});
  const auto deadline = DrainedChild::Clock::now() + std::chrono::seconds(30);
  EXPECT_EQ(echo.wait_for(DrainedChild::Stream::out, "hello", deadline), DrainedChild::Seen::yes);
  EXPECT_EQ(echo.wait_for(DrainedChild::Stream::out, "bye", deadline), DrainedChild::Seen::closed);
  EXPECT_EQ(echo.wait(std::chrono::seconds(30)).exit_code, 0);
}

}  // namespace
}  // namespace virtcap::testing
