// Subprocesses by argv, never through a shell: posix_spawn (execve
// semantics) with explicit argv and pipes for stdout/stderr. A child starts
// with only fds 0-2 (every other descriptor of ours, inherited or not marked
// close-on-exec, is closed in the child), in a process group of its own, and
// run() kills (SIGKILL, the whole group) and reaps it at its deadline.
// Test children that must die with the test are started by fork and exec
// instead (SpawnOptions::die_with_parent), with the same start state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "virtcap/error.h"

namespace virtcap::proc {

struct Output {
  int exit_code = -1;   // exit status, or -1 if killed by a signal
  int term_signal = 0;  // the signal that killed it, if any
  std::string out;
  std::string err;
  bool timed_out = false;  // killed at its deadline
};

// The deadline run() gives a child: [DEFAULT] subprocess_timeout, set at
// start by the CLI; 600 s until then.
void set_default_timeout(std::chrono::milliseconds t);
std::chrono::milliseconds default_timeout();

// Runs argv[0] (searched in PATH when it has no '/') to completion, or
// until the timeout: then it is killed and reaped, and the answer is an
// io_error naming the command and the timeout.
Result<Output> run(const std::vector<std::string>& argv);
Result<Output> run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// How Child::spawn starts a child.
struct SpawnOptions {
  // SIGKILL the child when the thread that spawned it ends (PR_SET_PDEATHSIG,
  // set between fork and exec; a child whose parent is already gone by then
  // exits 127 at once). For test children, so none outlives a killed test.
  // Off (run() and every production caller): posix_spawn, and the child
  // outlives us.
  bool die_with_parent = false;
};

// A running child with its stdout and stderr piped to us.
class Child {
 public:
  static Result<Child> spawn(const std::vector<std::string>& argv, SpawnOptions opts = {});
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();  // kills (SIGKILL) and reaps a child still running

  pid_t pid() const { return pid_; }
  // Hands over the read ends of stdout and stderr {out, err} to a caller
  // that reads them itself (to EOF, or the child may block on a full pipe);
  // wait() then only waits for the exit and reaps.
  std::pair<UniqueFd, UniqueFd> release_pipes();
  bool signal(int sig);
  // Waits for exit, draining both pipes; with a timeout, kills the child's
  // process group at the deadline (timed_out) and reaps it.
  Output wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  Child(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
};

}  // namespace virtcap::proc
