#include "compute/periodic.h"

#include <spdlog/spdlog.h>

#include <random>

#include "common/time.h"

namespace virtcap::compute {

std::string_view to_string(TaskOutcome::Kind k) {
  switch (k) {
    case TaskOutcome::Kind::ran: return "ran";
    case TaskOutcome::Kind::skipped: return "skipped";
    case TaskOutcome::Kind::failed: return "failed";
  }
  return "failed";
}

struct PeriodicTaskRunner::Slot {
  PeriodicTask task;
  TaskStatus status;  // guarded by the runner's mu_
};

PeriodicTaskRunner::PeriodicTaskRunner(Options options) : options_(options) {}

PeriodicTaskRunner::~PeriodicTaskRunner() { stop(); }

bool PeriodicTaskRunner::enabled(const PeriodicTask& t) {
  return t.disabled_reason.empty() && t.spacing_seconds > 0;
}

void PeriodicTaskRunner::add(PeriodicTask task) {
  MutexLock lock(mu_);
  auto slot = std::make_unique<Slot>();
  slot->status.name = task.name;
  slot->status.spacing_seconds = task.spacing_seconds;
  slot->status.enabled = enabled(task);
  slot->status.disabled_reason = !task.disabled_reason.empty() ? task.disabled_reason
                                 : task.spacing_seconds <= 0
                                     ? "spacing is " +
                                           std::to_string(static_cast<long long>(task.spacing_seconds)) +
                                           " s (<= 0 disables the task)"
                                     : "";
  slot->task = std::move(task);
  slots_.push_back(std::move(slot));
}

void PeriodicTaskRunner::start() {
  MutexLock lock(mu_);
  if (started_) return;
  started_ = true;
  std::mt19937_64 rng(options_.seed ? options_.seed : std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.0, std::max(0.0, options_.max_jitter_seconds));
  for (auto& slot : slots_) {
    if (!slot->status.enabled) {
      spdlog::info("periodic task '{}' disabled: {}", slot->task.name, slot->status.disabled_reason);
      continue;
    }
    const FirstRun when = slot->task.first_run;
    const double first = (when == FirstRun::after_spacing ? slot->task.spacing_seconds : 0.0) +
                         (when != FirstRun::at_start && options_.max_jitter_seconds > 0 ? jitter(rng) : 0.0);
    slot->status.first_delay_seconds = first;
    spdlog::info("periodic task '{}' every {} s, first run in {:.1f} s", slot->task.name,
                 slot->task.spacing_seconds, first);
    threads_.emplace_back([this, s = slot.get(), first](std::stop_token st) { loop(st, *s, first); });
  }
}

void PeriodicTaskRunner::stop() {
  {
    MutexLock lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  for (auto& t : threads_) t.request_stop();
  cv_.notify_all();
  threads_.clear();  // jthread joins
}

void PeriodicTaskRunner::loop(std::stop_token st, Slot& slot, double first_delay) {
  using clock = std::chrono::steady_clock;
  auto next =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(first_delay));
  const auto spacing =
      std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(slot.task.spacing_seconds));
  while (true) {
    {
      MutexLock lock(mu_);
      if (cv_.wait_until(mu_, st, next)) return;  // stop requested
    }
    const auto started = clock::now();
    const auto wall = wall_now();
    TaskOutcome outcome;
    try {
      outcome = slot.task.fn(st);
    } catch (const std::exception& e) {
      outcome = TaskOutcome::failed(std::string("exception: ") + e.what());
    } catch (...) {
      outcome = TaskOutcome::failed("unknown exception");
    }
    const std::chrono::duration<double> took = clock::now() - started;
    // Recorded before it is logged: whoever reads the log line sees the run
    // in status() (and GET /v1/tasks) too.
    {
      MutexLock lock(mu_);
      slot.status.runs++;
      slot.status.runs_by_result[static_cast<int>(outcome.kind)]++;
      slot.status.last_started = wall;
      slot.status.last_duration = took;
      slot.status.last_outcome = outcome;
    }
    switch (outcome.kind) {
      case TaskOutcome::Kind::ran:
        spdlog::info("periodic task '{}' ran in {:.3f} s{}{}", slot.task.name, took.count(),
                     outcome.message.empty() ? "" : ": ", outcome.message);
        break;
      case TaskOutcome::Kind::skipped:
        spdlog::info("periodic task '{}' skipped: {}", slot.task.name, outcome.message);
        break;
      case TaskOutcome::Kind::failed:
        spdlog::error("periodic task '{}' failed after {:.3f} s: {}", slot.task.name, took.count(),
                      outcome.message);
        break;
    }
    cv_.notify_all();
    next = std::max(started + spacing, clock::now());
  }
}

std::vector<TaskStatus> PeriodicTaskRunner::status() const {
  MutexLock lock(mu_);
  std::vector<TaskStatus> out;
  for (const auto& s : slots_) out.push_back(s->status);
  return out;
}

bool PeriodicTaskRunner::wait_for_runs(const std::string& name, std::uint64_t runs,
                                       std::chrono::milliseconds timeout) const {
  MutexLock lock(mu_);
  const Slot* slot = nullptr;
  for (const auto& s : slots_)
    if (s->task.name == name) slot = s.get();
  if (!slot) return false;
  cv_.wait_for(mu_, timeout, [&] {
    mu_.assert_held();
    return stopped_ || slot->status.runs >= runs;
  });
  return slot->status.runs >= runs;
}

}  // namespace virtcap::compute
