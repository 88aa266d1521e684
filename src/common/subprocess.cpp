#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace virtcap::proc {

namespace {

Error sys_error(const std::string& what) {
  return make_error(Errc::io_error, what + ": " + std::strerror(errno));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Reads what is available from fd into buf; returns false at EOF/error.
bool read_some(int fd, std::string& buf) {
  char tmp[4096];
  ssize_t n;
  do {
    n = ::read(fd, tmp, sizeof tmp);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  buf.append(tmp, static_cast<std::size_t>(n));
  return true;
}

std::atomic<std::int64_t> g_default_timeout_ms{600'000};

}  // namespace

void set_default_timeout(std::chrono::milliseconds t) { g_default_timeout_ms = t.count(); }
std::chrono::milliseconds default_timeout() { return std::chrono::milliseconds(g_default_timeout_ms.load()); }

Result<Child> Child::spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return make_error(Errc::invalid_argument, "empty argv");
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return sys_error("pipe");
  }
  // A long-running child (an agent under test logging an audit line per
  // operation) may write more than the default 64 KiB of stderr between our
  // reads; 1 MiB (the default pipe-max-size; a refusal is harmless, the pipe
  // keeps its size) keeps it from blocking on its log.
  (void)::fcntl(err_pipe[0], F_SETPIPE_SZ, 1 << 20);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // Only 0-2 survive: sockets and pipes of other threads (opened without
  // O_CLOEXEC by a library, or racing this spawn) never reach the child.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  // The child starts with default signal dispositions and an empty mask, even
  // if the parent blocks SIGTERM for sigwait.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  // A group of its own, so a timeout kills the child's own children too.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return make_error(Errc::io_error, "cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  return Child(pid, out_pipe[0], err_pipe[0]);
}

Child::Child(Child&& o) noexcept
    : pid_(o.pid_), out_fd_(o.out_fd_), err_fd_(o.err_fd_), out_(std::move(o.out_)), err_(std::move(o.err_)),
      reaped_(o.reaped_) {
  o.pid_ = -1;
  o.out_fd_ = o.err_fd_ = -1;
  o.reaped_ = true;
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  close_fd(out_fd_);
  close_fd(err_fd_);
}

bool Child::signal(int sig) { return pid_ > 0 && !reaped_ && ::kill(pid_, sig) == 0; }

bool Child::wait_for_stderr(const std::string& needle) { return wait_for(err_fd_, err_, needle); }

bool Child::wait_for_stdout(const std::string& needle) { return wait_for(out_fd_, out_, needle); }

bool Child::wait_for(int& fd, std::string& seen, const std::string& needle) {
  int& other_fd = &fd == &err_fd_ ? out_fd_ : err_fd_;
  std::string& other = &fd == &err_fd_ ? out_ : err_;
  std::size_t scanned = 0;
  while (true) {
    if (seen.find(needle, scanned > needle.size() ? scanned - needle.size() : 0) != std::string::npos) return true;
    scanned = seen.size();
    pollfd fds[2] = {{fd, POLLIN, 0}, {other_fd, POLLIN, 0}};
    if (fd < 0) return false;
    if (::poll(fds, other_fd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    // The other pipe is drained too, so a chatty child never blocks on it.
    if (fds[1].revents && other_fd >= 0 && !read_some(other_fd, other)) close_fd(other_fd);
    if (fds[0].revents && !read_some(fd, seen)) {
      close_fd(fd);
      return seen.find(needle) != std::string::npos;
    }
  }
}

Output Child::wait(std::optional<std::chrono::milliseconds> timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout.value_or(std::chrono::milliseconds(0));
  bool timed_out = false;
  while (out_fd_ >= 0 || err_fd_ >= 0) {
    pollfd fds[2];
    nfds_t n = 0;
    if (out_fd_ >= 0) fds[n++] = {out_fd_, POLLIN, 0};
    if (err_fd_ >= 0) fds[n++] = {err_fd_, POLLIN, 0};
    int wait_ms = -1;
    if (timeout) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      wait_ms = static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000));
    }
    const int rc = ::poll(fds, n, wait_ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (timeout && Clock::now() >= deadline) {
      timed_out = true;
      ::kill(-pid_, SIGKILL);  // the group: the child and what it started
      ::kill(pid_, SIGKILL);
      close_fd(out_fd_);
      close_fd(err_fd_);
      break;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == out_fd_ && !read_some(out_fd_, out_)) close_fd(out_fd_);
      else if (fds[i].fd == err_fd_ && !read_some(err_fd_, err_)) close_fd(err_fd_);
    }
  }
  if (timeout && !timed_out && !reaped_) {
    // The pipes closed (or the child handed them on) but it may still run.
    const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pfd >= 0) {
      pollfd pf{pfd, POLLIN, 0};
      int rc;
      do {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        rc = ::poll(&pf, 1, static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000)));
      } while ((rc < 0 && errno == EINTR) || (rc == 0 && Clock::now() < deadline));
      ::close(pfd);
      if (rc == 0) {
        timed_out = true;
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
      }
    }
  }
  Output o;
  int status = 0;
  if (!reaped_) {
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) o.term_signal = WTERMSIG(status);
  }
  o.out = out_;
  o.err = err_;
  o.timed_out = timed_out;
  return o;
}

Result<Output> run(const std::vector<std::string>& argv) { return run(argv, default_timeout()); }

Result<Output> run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  auto child = Child::spawn(argv);
  if (!child) return child.error();
  auto out = child.value().wait(timeout);
  if (out.timed_out)
    return make_error(Errc::io_error, argv[0] + " did not finish within " +
                                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                                          " s ([DEFAULT] subprocess_timeout); it was killed");
  return out;
}

}  // namespace virtcap::proc
