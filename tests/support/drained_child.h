// A child process of a test whose stdout and stderr a thread of its own reads
// as they come, into buffers that the test's waits look at: the child never
// blocks on a full pipe however long the test goes without looking, and every
// wait has a deadline. The child is SIGKILLed when the test process dies
// (proc::SpawnOptions::die_with_parent), so none outlives a crashed test;
// strictly, when the thread that started it ends, so start children on the
// test's own thread, not on a short-lived helper thread.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/subprocess.h"

namespace virtcap::testing {

class DrainedChild {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Stream { out, err };
  // How a wait ended: the text came, the stream closed without it, or the
  // deadline passed.
  enum class Seen { yes, closed, deadline };
  // After a kill, how long the child's pipes and exit may take.
  static constexpr std::chrono::seconds kKillGrace{10};

  // Throws std::runtime_error when the child cannot be started.
  explicit DrainedChild(const std::vector<std::string>& argv) {
    int stop[2];
    if (::pipe2(stop, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    stop_read_.reset(stop[0]);
    stop_write_.reset(stop[1]);
    auto c = proc::Child::spawn(argv, {.die_with_parent = true});
    if (!c.ok()) throw std::runtime_error(c.error().message);
    child_.emplace(std::move(c.value()));
    auto pipes = child_->release_pipes();
    drainer_ = std::thread([this, out = std::move(pipes.first), err = std::move(pipes.second)]() mutable {
      drain(std::move(out), std::move(err));
    });
  }
  ~DrainedChild() {
    if (!reaped_) kill_group();
    stop_drain();  // proc::Child's destructor reaps a child not yet reaped
  }
  DrainedChild(const DrainedChild&) = delete;
  DrainedChild& operator=(const DrainedChild&) = delete;

  pid_t pid() const { return child_->pid(); }
  bool signal(int sig) { return !reaped_ && child_->signal(sig); }

  // Waits until `needle` is in what the stream has written, the stream
  // closes, or the deadline passes.
  Seen wait_for(Stream s, const std::string& needle, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    const std::string& text = s == Stream::out ? out_ : err_;
    const bool& open = s == Stream::out ? out_open_ : err_open_;
    std::size_t from = 0;  // where a match may still start
    bool found = false;
    cv_.wait_until(lock, deadline, [&] {
      found = text.find(needle, from) != std::string::npos;
      from = text.size() >= needle.size() ? text.size() - needle.size() + 1 : 0;
      return found || !open;
    });
    return found ? Seen::yes : !open ? Seen::closed : Seen::deadline;
  }
  // Everything the stream has written so far.
  std::string seen(Stream s) const {
    std::lock_guard lock(mu_);
    return s == Stream::out ? out_ : err_;
  }

  // Waits, at most `limit`, for the child to close both pipes and exit;
  // past it kills its process group (timed_out). Reaps it; the answer holds
  // everything it wrote.
  proc::Output wait(Clock::duration limit) {
    const auto deadline = Clock::now() + limit;
    auto closed = [this] { return !out_open_ && !err_open_; };
    std::unique_lock lock(mu_);
    const bool late = !cv_.wait_until(lock, deadline, closed);
    if (late) {
      kill_group();
      // What a descendant outside the group still holds is not waited for.
      cv_.wait_for(lock, kKillGrace, closed);
    }
    lock.unlock();
    stop_drain();
    const auto left =
        late ? std::chrono::milliseconds(kKillGrace)
             : std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                        std::chrono::milliseconds(0));
    proc::Output o = child_->wait(left);  // the pipes are ours: this only reaps (killing at its deadline)
    reaped_ = true;
    o.timed_out = o.timed_out || late;
    lock.lock();
    o.out = out_;
    o.err = err_;
    return o;
  }

 private:
  // SIGKILL to the child and to its process group (what it started); the
  // child is not reaped yet, so the pid is still ours.
  void kill_group() {
    ::kill(-child_->pid(), SIGKILL);
    child_->signal(SIGKILL);
  }

  void drain(UniqueFd out, UniqueFd err) {
    std::vector<char> buf(1 << 16);
    while (out.valid() || err.valid()) {
      pollfd fds[3] = {{out.get(), POLLIN, 0}, {err.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
      if (::poll(fds, 3, -1) < 0) {
        if (errno == EINTR) continue;
        note_and_close(out, err, std::string("poll: ") + std::strerror(errno));
        break;
      }
      if (fds[2].revents) break;
      for (UniqueFd* fd : {&out, &err}) {
        if (!fds[fd == &out ? 0 : 1].revents) continue;
        const ssize_t n = ::read(fd->get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        const int read_errno = errno;
        std::lock_guard lock(mu_);
        std::string& text = fd == &out ? out_ : err_;
        if (n > 0) {
          text.append(buf.data(), static_cast<std::size_t>(n));
          continue;
        }
        if (n < 0)
          text +=
              std::string("\n[test support] reading the child's pipe: ") + std::strerror(read_errno) + "\n";
        fd->reset();
        (fd == &out ? out_open_ : err_open_) = false;
      }
      cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    out_open_ = err_open_ = false;
    cv_.notify_all();
  }
  void note_and_close(UniqueFd& out, UniqueFd& err, const std::string& why) {
    std::lock_guard lock(mu_);
    err_ += "\n[test support] draining the child's pipes: " + why + "\n";
    out.reset();
    err.reset();
  }
  void stop_drain() {
    if (!drainer_.joinable()) return;
    const char c = 0;
    (void)!::write(stop_write_.get(), &c, 1);
    drainer_.join();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_, err_;
  bool out_open_ = true, err_open_ = true;
  std::optional<proc::Child> child_;
  bool reaped_ = false;
  UniqueFd stop_read_, stop_write_;
  std::thread drainer_;
};

}  // namespace virtcap::testing
