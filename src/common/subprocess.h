// Subprocesses by argv, never through a shell: posix_spawn (execve
// semantics) with explicit argv and pipes for stdout/stderr.
#pragma once

#include <sys/types.h>

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
};

// Runs argv[0] (searched in PATH when it has no '/') to completion.
Result<Output> run(const std::vector<std::string>& argv);

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
  bool signal(int sig);
  // Waits for exit, draining both pipes.
  Output wait();

 private:
  Child(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
};

}  // namespace virtcap::proc
