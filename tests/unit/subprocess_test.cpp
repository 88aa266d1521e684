// Children start with only fds 0-2, and a timeout kills and reaps them.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "common/subprocess.h"

namespace virtcap {
namespace {

TEST(Subprocess, ChildSeesOnlyFdsZeroToTwo) {
  // An fd without close-on-exec, as a library or another thread might leave.
  const int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 3);
  ASSERT_EQ(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  auto r = proc::run({"sh", "-c", "ls /proc/$$/fd"}, std::chrono::seconds(30));
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.error().message;
  // The shell may hold only 0-2 (ls's own directory fd is in ls, not $$).
  EXPECT_EQ(r->out, "0\n1\n2\n") << "child fds:\n" << r->out;
}

TEST(Subprocess, TimeoutKillsAndReapsTheChildAndItsChildren) {
  const auto t0 = std::chrono::steady_clock::now();
  // The grandchild keeps the pipes open; the whole group is killed.
  auto r = proc::run({"sh", "-c", "sleep 60 & sleep 60"}, std::chrono::milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("did not finish within"), std::string::npos) << r.error().message;
  EXPECT_LT(took, std::chrono::seconds(20));

  auto quick = proc::run({"true"}, std::chrono::seconds(30));
  ASSERT_TRUE(quick.ok());
  EXPECT_EQ(quick->exit_code, 0);
}

TEST(Subprocess, TheDefaultTimeoutIsSettable) {
  const auto old = proc::default_timeout();
  proc::set_default_timeout(std::chrono::milliseconds(200));
  auto r = proc::run({"sleep", "60"});
  proc::set_default_timeout(old);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("subprocess_timeout"), std::string::npos);
}

}  // namespace
}  // namespace virtcap
