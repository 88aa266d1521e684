// Subprocesses by argv, never through a shell: posix_spawn (execve
// semantics) with explicit argv and pipes for stdout/stderr. A child starts
// with only fds 0-2 (every other descriptor of ours, inherited or not marked
// close-on-exec, is closed in the child), in a process group of its own, and
// run() kills (SIGKILL, the whole group) and reaps it at its deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

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

// A running child with its stdout and stderr piped to us.
class Child {
 public:
  static Result<Child> spawn(const std::vector<std::string>& argv);
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();  // kills (SIGKILL) and reaps a child still running

  pid_t pid() const { return pid_; }
  // Reads stderr until a line containing `needle` arrives (returns true) or
  // stderr closes (false). Everything read is kept in err_seen().
  bool wait_for_stderr(const std::string& needle);
  const std::string& err_seen() const { return err_; }
  // The same for stdout (stderr is drained meanwhile).
  bool wait_for_stdout(const std::string& needle);
  const std::string& out_seen() const { return out_; }
  bool signal(int sig);
  // Waits for exit, draining both pipes; with a timeout, kills the child's
  // process group at the deadline (timed_out) and reaps it.
  Output wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  bool wait_for(int& fd, std::string& seen, const std::string& needle);
  Child(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
};

}  // namespace virtcap::proc
