// Children start with only fds 0-2, and a timeout kills and reaps them.
#include "common/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

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

// What a child started by Child::spawn reports on itself: its fds, whether
// it leads its own process group, and its blocked and ignored signals (of
// 1-31; glibc's own 32 and 33 are left out).
std::string start_state(bool die_with_parent) {
  std::string state;
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"sh", "-c", "ls /proc/$$/fd; [ \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$ ] && echo own-group; cat"},
           {"grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"}}) {
    auto c = proc::Child::spawn(argv, {.die_with_parent = die_with_parent});
    if (!c.ok()) return c.error().message;
    const auto o = c->wait(std::chrono::seconds(30));
    if (o.exit_code != 0) return argv[0] + " failed: " + o.err;
    std::istringstream lines(o.out);
    for (std::string line; std::getline(lines, line);) {
      const auto tab = line.find('\t');
      if (line.starts_with("Sig") && tab != std::string::npos)
        line = line.substr(0, tab) + " " +
               std::to_string(std::stoull(line.substr(tab + 1), nullptr, 16) & 0x7fffffffu);
      state += line + "\n";
    }
  }
  return state;
}

// The opt-in fork path (SpawnOptions::die_with_parent, for test children)
// starts a child as posix_spawn does: only fds 0-2, stdin /dev/null, a
// process group of its own, no signal blocked or ignored even where the
// parent blocks or ignores some; a program that cannot run is an error
// naming it.
TEST(Subprocess, DieWithParentStartsTheChildAsPosixSpawnDoes) {
  const int leak = ::open("/dev/null", O_RDONLY);  // no close-on-exec
  sigset_t term, old_mask;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &term, &old_mask);
  const auto old_usr1 = ::signal(SIGUSR1, SIG_IGN);
  const std::string posix = start_state(false), forked = start_state(true);
  ::signal(SIGUSR1, old_usr1);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::close(leak);
  EXPECT_EQ(forked, posix) << "fork path:\n" << forked << "posix_spawn:\n" << posix;
  EXPECT_EQ(forked, "0\n1\n2\nown-group\nSigBlk: 0\nSigIgn: 0\n");

  auto missing = proc::Child::spawn({"/nonexistent/virtcap-test"}, {.die_with_parent = true});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cannot run /nonexistent/virtcap-test: No such file or directory"),
            std::string::npos)
      << missing.error().message;
}

}  // namespace
}  // namespace virtcap
