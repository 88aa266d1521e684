// Periodic tasks: each named task runs on its own thread, every `spacing`
// seconds, so a slow task never starves the others. Spacing <= 0 (or a
// disabled reason) disables a task. The first run comes after `spacing`, or
// at once (FirstRun), plus a random jitter in [0, max_jitter] - except a task
// that must run at start, which gets no jitter. An exception in a task is
// logged and recorded; the task keeps its schedule.
// stop() interrupts every wait at once and joins; a running task sees its
// stop_token requested.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"

namespace virtcap::compute {

struct TaskOutcome {
  enum class Kind { ran, skipped, failed };
  Kind kind = Kind::ran;
  std::string message;

  static TaskOutcome ran(std::string msg = {}) { return {Kind::ran, std::move(msg)}; }
  static TaskOutcome skipped(std::string reason) { return {Kind::skipped, std::move(reason)}; }
  static TaskOutcome failed(std::string msg) { return {Kind::failed, std::move(msg)}; }
};
std::string_view to_string(TaskOutcome::Kind k);

// When a task first runs: after one spacing, or at once; both with the
// runner's jitter. at_start: at once, without jitter (a task whose first run
// others wait for, such as the agent's report to the fleet).
enum class FirstRun { after_spacing, immediately, at_start };

struct PeriodicTask {
  std::string name;
  double spacing_seconds = 0;
  FirstRun first_run = FirstRun::after_spacing;
  std::string disabled_reason;  // non-empty: never scheduled, reported with this reason
  std::function<TaskOutcome(std::stop_token)> fn;
};

struct TaskStatus {
  std::string name;
  double spacing_seconds = 0;
  bool enabled = false;
  std::string disabled_reason;
  double first_delay_seconds = 0;  // the scheduled delay (spacing unless at once, + jitter unless at start)
  std::uint64_t runs = 0;
  std::uint64_t runs_by_result[3] = {0, 0, 0};  // indexed by TaskOutcome::Kind: ran, skipped, failed
  std::optional<std::chrono::system_clock::time_point> last_started;
  std::chrono::duration<double> last_duration{0};
  std::optional<TaskOutcome> last_outcome;
};

class PeriodicTaskRunner {
 public:
  struct Options {
    double max_jitter_seconds = 0;
    std::uint64_t seed = 0;  // 0: seeded from std::random_device
  };
  explicit PeriodicTaskRunner(Options options);
  PeriodicTaskRunner(const PeriodicTaskRunner&) = delete;
  PeriodicTaskRunner& operator=(const PeriodicTaskRunner&) = delete;
  ~PeriodicTaskRunner();

  // Before start() only.
  void add(PeriodicTask task);
  void start();
  // Prompt: wakes every waiting task, requests stop of running ones, joins.
  void stop();

  std::vector<TaskStatus> status() const;
  // Blocks until task `name` has completed at least `runs` runs, stop(), or
  // `timeout` passes. Returns false if stopped or timed out first, or if there
  // is no such task. (For tests and one-shot callers; no wait is unbounded.)
  bool wait_for_runs(const std::string& name, std::uint64_t runs, std::chrono::milliseconds timeout) const;

 private:
  struct Slot;
  void loop(std::stop_token st, Slot& slot, double first_delay);
  static bool enabled(const PeriodicTask& t);

  Options options_;
  mutable Mutex mu_;
  mutable CondVar cv_;
  std::vector<std::unique_ptr<Slot>> slots_ GUARDED_BY(mu_);  // each Slot's status too
  std::vector<std::jthread> threads_;
  bool started_ GUARDED_BY(mu_) = false;
  bool stopped_ GUARDED_BY(mu_) = false;
};

}  // namespace virtcap::compute
