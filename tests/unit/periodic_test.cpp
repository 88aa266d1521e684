#include "compute/periodic.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

namespace virtcap::compute {
namespace {

PeriodicTaskRunner::Options no_jitter() { return {.max_jitter_seconds = 0, .seed = 1}; }

// Every wait in these tests ends by this deadline, failing the test; a
// healthy run needs milliseconds.
constexpr std::chrono::seconds kDeadline{30};

TEST(PeriodicTaskRunner, RunsImmediatelyAndThenOnSchedule) {
  PeriodicTaskRunner runner(no_jitter());
  std::atomic<int> n{0};
  runner.add({"tick", 0.001, FirstRun::immediately, "", [&](std::stop_token) {
                ++n;
                return TaskOutcome::ran("ok");
              }});
  runner.start();
  ASSERT_TRUE(runner.wait_for_runs("tick", 5, kDeadline));
  runner.stop();
  EXPECT_GE(n.load(), 5);
  const auto st = runner.status();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_TRUE(st[0].enabled);
  EXPECT_GE(st[0].runs, 5u);
  ASSERT_TRUE(st[0].last_outcome.has_value());
  EXPECT_EQ(st[0].last_outcome->kind, TaskOutcome::Kind::ran);
  EXPECT_TRUE(st[0].last_started.has_value());
}

TEST(PeriodicTaskRunner, NonPositiveSpacingDisablesTheTask) {
  PeriodicTaskRunner runner(no_jitter());
  std::atomic<int> disabled_runs{0};
  runner.add({"off", 0, FirstRun::immediately, "", [&](std::stop_token) {
                ++disabled_runs;
                return TaskOutcome::ran();
              }});
  runner.add({"negative", -5, FirstRun::immediately, "", [&](std::stop_token) {
                ++disabled_runs;
                return TaskOutcome::ran();
              }});
  runner.add({"by_reason", 1, FirstRun::immediately, "driver says no", [&](std::stop_token) {
                ++disabled_runs;
                return TaskOutcome::ran();
              }});
  runner.add({"on", 0.001, FirstRun::immediately, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.start();
  // Once the enabled task has run three times, the others had every chance.
  ASSERT_TRUE(runner.wait_for_runs("on", 3, kDeadline));
  runner.stop();
  EXPECT_EQ(disabled_runs.load(), 0);
  const auto st = runner.status();
  EXPECT_FALSE(st[0].enabled);
  EXPECT_NE(st[0].disabled_reason.find("<= 0 disables"), std::string::npos);
  EXPECT_FALSE(st[1].enabled);
  EXPECT_FALSE(st[2].enabled);
  EXPECT_EQ(st[2].disabled_reason, "driver says no");
  EXPECT_EQ(st[0].runs + st[1].runs + st[2].runs, 0u);
}

TEST(PeriodicTaskRunner, AnExceptionIsRecordedAndStopsNothing) {
  PeriodicTaskRunner runner(no_jitter());
  runner.add({"thrower", 0.001, FirstRun::immediately, "",
              [](std::stop_token) -> TaskOutcome { throw std::runtime_error("disk on fire"); }});
  runner.add(
      {"steady", 0.001, FirstRun::immediately, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.start();
  ASSERT_TRUE(runner.wait_for_runs("thrower", 3, kDeadline));  // keeps its schedule after throwing
  ASSERT_TRUE(runner.wait_for_runs("steady", 3, kDeadline));
  runner.stop();
  const auto st = runner.status();
  ASSERT_TRUE(st[0].last_outcome.has_value());
  EXPECT_EQ(st[0].last_outcome->kind, TaskOutcome::Kind::failed);
  EXPECT_NE(st[0].last_outcome->message.find("disk on fire"), std::string::npos);
}

TEST(PeriodicTaskRunner, ASlowTaskDoesNotStarveTheOthers) {
  PeriodicTaskRunner runner(no_jitter());
  std::promise<void> release;
  auto released = release.get_future().share();
  runner.add({"slow", 0.001, FirstRun::immediately, "", [released](std::stop_token) {
                // Bounded: a failed assertion below cannot leave it blocked.
                if (released.wait_for(kDeadline) != std::future_status::ready)
                  return TaskOutcome::failed("never released");
                return TaskOutcome::ran();
              }});
  runner.add({"fast", 0.001, FirstRun::immediately, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.start();
  // "fast" completes 20 runs while "slow" is still inside its first.
  ASSERT_TRUE(runner.wait_for_runs("fast", 20, kDeadline));
  EXPECT_EQ(runner.status()[0].runs, 0u);
  release.set_value();
  ASSERT_TRUE(runner.wait_for_runs("slow", 1, kDeadline));
  runner.stop();
}

TEST(PeriodicTaskRunner, StopInterruptsLongWaitsAndCooperativeTasks) {
  PeriodicTaskRunner runner(no_jitter());
  std::promise<void> entered;
  runner.add(
      {"hourly", 3600, FirstRun::after_spacing, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.add({"cooperative", 3600, FirstRun::immediately, "", [&](std::stop_token st) {
                entered.set_value();
                std::mutex m;
                std::condition_variable_any cv;
                std::unique_lock lock(m);
                cv.wait(lock, st, [] { return false; });  // returns only on stop
                return TaskOutcome::skipped("stopped");
              }});
  runner.start();
  ASSERT_EQ(entered.get_future().wait_for(kDeadline), std::future_status::ready) << "the task never started";
  const auto t0 = std::chrono::steady_clock::now();
  runner.stop();  // must not wait out the hour, nor hang on the running task
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(runner.status()[0].runs, 0u);
  EXPECT_FALSE(runner.wait_for_runs("hourly", 1, kDeadline));
}

TEST(PeriodicTaskRunner, WaitForRunsEndsAtItsDeadline) {
  PeriodicTaskRunner runner(no_jitter());
  runner.add(
      {"hourly", 3600, FirstRun::after_spacing, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.start();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(runner.wait_for_runs("hourly", 1, std::chrono::milliseconds(50)));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(50));
  EXPECT_LT(waited, kDeadline);
  EXPECT_FALSE(runner.wait_for_runs("no-such-task", 1, kDeadline));
  runner.stop();
}

TEST(PeriodicTaskRunner, JitterDelaysTheFirstRunWithinItsBound) {
  PeriodicTaskRunner runner({.max_jitter_seconds = 30, .seed = 42});
  std::atomic<int> n{0};
  for (int i = 0; i < 4; ++i) {
    runner.add({"immediate" + std::to_string(i), 100, FirstRun::immediately, "", [&](std::stop_token) {
                  ++n;
                  return TaskOutcome::ran();
                }});
    runner.add({"spaced" + std::to_string(i), 100, FirstRun::after_spacing, "", [&](std::stop_token) {
                  ++n;
                  return TaskOutcome::ran();
                }});
  }
  runner.start();
  const auto st = runner.status();
  runner.stop();
  bool any_jittered = false;
  for (const auto& s : st) {
    const double base = s.name.starts_with("immediate") ? 0.0 : 100.0;
    EXPECT_GE(s.first_delay_seconds, base) << s.name;
    EXPECT_LE(s.first_delay_seconds, base + 30) << s.name;
    any_jittered |= s.first_delay_seconds > base;
  }
  EXPECT_TRUE(any_jittered);
}

// A task that must run at start (the fleet report) gets no jitter: it runs at
// once even when every other task waits up to the jitter bound.
TEST(PeriodicTaskRunner, AnAtStartTaskRunsAtOnceWithoutJitter) {
  PeriodicTaskRunner runner({.max_jitter_seconds = 3600, .seed = 7});
  runner.add({"report", 3600, FirstRun::at_start, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.add({"other", 3600, FirstRun::immediately, "", [](std::stop_token) { return TaskOutcome::ran(); }});
  runner.start();
  EXPECT_TRUE(runner.wait_for_runs("report", 1, std::chrono::seconds(30))) << "ran at start";
  const auto st = runner.status();
  runner.stop();
  for (const auto& s : st) {
    if (s.name == "report") {
      EXPECT_EQ(s.first_delay_seconds, 0.0);
    } else {
      EXPECT_GT(s.first_delay_seconds, 0.0) << "the other task is jittered";
    }
  }
}

}  // namespace
}  // namespace virtcap::compute
