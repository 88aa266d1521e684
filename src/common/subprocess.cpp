#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

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

// posix_spawn with out_w and err_w as the child's stdout and stderr; 0 or an
// errno.
int spawn_posix(char* const* argv, int out_w, int err_w, pid_t& pid) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_w, 1);
  posix_spawn_file_actions_adddup2(&fa, err_w, 2);
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
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc;
}

// Closes descriptors lo..hi (inclusive): close_range, or one by one where the
// kernel has none (before 5.9), up to the descriptor limit. Signal-safe.
void close_fds(unsigned lo, unsigned hi) {
  if (lo > hi || ::syscall(SYS_close_range, lo, hi, 0U) == 0) return;
  struct rlimit rl {};
  const unsigned cap = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536
                           ? static_cast<unsigned>(rl.rlim_cur)
                           : 65536U;
  for (unsigned fd = lo; fd <= std::min(hi, cap); ++fd) (void)::close(static_cast<int>(fd));
}

// In the forked child, until exec: async-signal-safe calls only. The start
// state of spawn_posix, and SIGKILL when the parent dies. Writes the errno
// of what failed to report_fd (close-on-exec: a successful exec closes it
// unwritten).
[[noreturn]] void exec_forked(char* const* argv, int out_w, int err_w, pid_t parent, int report_fd) {
  int err = 0;
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) err = errno;
  if (::getppid() != parent) ::_exit(127);  // died before the prctl: nobody to run for
  const int null_fd = err ? -1 : ::open("/dev/null", O_RDONLY);
  if (!err && (null_fd < 0 || ::dup2(null_fd, 0) < 0 || ::dup2(out_w, 1) < 0 || ::dup2(err_w, 2) < 0))
    err = errno;
  if (!err && ::setpgid(0, 0) != 0) err = errno;
  if (!err) {
    // Only 0-2 survive (and report_fd, until exec).
    close_fds(3U, static_cast<unsigned>(report_fd) - 1);  // report_fd >= 3 (spawn_forked)
    close_fds(static_cast<unsigned>(report_fd) + 1, ~0U);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) (void)::sigaction(sig, &dfl, nullptr);  // SIGKILL, SIGSTOP: EINVAL
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(argv[0], argv);
    err = errno;
  }
  (void)!::write(report_fd, &err, sizeof err);
  ::_exit(127);
}

// fork and exec (exec_forked); 0 or an errno, also of a failed exec.
int spawn_forked(char* const* argv, int out_w, int err_w, pid_t& pid) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return errno;
  // Above 0-2 even when the caller has closed some of those, so the child's
  // dup2 onto 0-2 never lands on the report pipe.
  for (int& fd : report)
    if (fd < 3) {
      const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      const int err = errno;
      ::close(fd);
      if (moved < 0) {
        ::close(report[0] == fd ? report[1] : report[0]);
        return err;
      }
      fd = moved;
    }
  const pid_t parent = ::getpid();
  // No handler of ours may run in the child before it resets them all.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = ::fork();
  if (pid == 0) exec_forked(argv, out_w, err_w, parent, report[1]);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n = 0;
  while (pid > 0 && (n = ::read(report[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (pid < 0) return fork_errno;
  if (n == 0) return 0;  // exec closed the report pipe unwritten
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  pid = -1;
  return n == static_cast<ssize_t>(sizeof child_errno) && child_errno ? child_errno : ECHILD;
}

}  // namespace

void set_default_timeout(std::chrono::milliseconds t) { g_default_timeout_ms = t.count(); }
std::chrono::milliseconds default_timeout() { return std::chrono::milliseconds(g_default_timeout_ms.load()); }

Result<Child> Child::spawn(const std::vector<std::string>& argv, SpawnOptions opts) {
  if (argv.empty()) return make_error(Errc::invalid_argument, "empty argv");
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return sys_error("pipe");
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = opts.die_with_parent ? spawn_forked(cargv.data(), out_pipe[1], err_pipe[1], pid)
                                      : spawn_posix(cargv.data(), out_pipe[1], err_pipe[1], pid);
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
    : pid_(o.pid_),
      out_fd_(o.out_fd_),
      err_fd_(o.err_fd_),
      out_(std::move(o.out_)),
      err_(std::move(o.err_)),
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

std::pair<UniqueFd, UniqueFd> Child::release_pipes() {
  return {UniqueFd(std::exchange(out_fd_, -1)), UniqueFd(std::exchange(err_fd_, -1))};
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
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
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
      if (fds[i].fd == out_fd_ && !read_some(out_fd_, out_))
        close_fd(out_fd_);
      else if (fds[i].fd == err_fd_ && !read_some(err_fd_, err_))
        close_fd(err_fd_);
    }
  }
  if (timeout && !timed_out && !reaped_) {
    // The pipes closed (or the child handed them on) but it may still run.
    const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pfd >= 0) {
      pollfd pf{pfd, POLLIN, 0};
      int rc;
      do {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
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
  if (!child.ok()) return child.error();
  auto out = child.value().wait(timeout);
  if (out.timed_out)
    return make_error(Errc::io_error,
                      argv[0] + " did not finish within " +
                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                          " s ([DEFAULT] subprocess_timeout); it was killed");
  return out;
}

}  // namespace virtcap::proc
