// HostRateLimit ([fleet_service] host_reports_per_minute): a token bucket per
// host, driven here by explicit times so every step is exact.
#include <gtest/gtest.h>

#include <string>

#include "fleet/rate_limit.h"

using namespace virtcap::fleet;
using namespace std::chrono_literals;

namespace {

const HostRateLimit::Clock::time_point t0{};

TEST(FleetRateLimit, ABurstOfPerMinuteThenOneReportEachSixtiethOfAMinute) {
  HostRateLimit limit(12);  // a token every 5 s
  for (int i = 0; i < 12; ++i) EXPECT_FALSE(limit.take("host1", t0)) << "report " << i << " of the burst";
  auto refused = limit.take("host1", t0);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->retry_after, 5000ms);
  EXPECT_TRUE(refused->first);
  refused = limit.take("host1", t0 + 2s);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->retry_after, 3000ms) << "counted from the refill, not from the refusal";
  EXPECT_FALSE(refused->first) << "one audit line a burst";
  EXPECT_FALSE(limit.take("host1", t0 + 5s)) << "the bucket refilled one report";
  auto again = limit.take("host1", t0 + 5s);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->first) << "a report went through in between";
  EXPECT_FALSE(limit.take("host2", t0)) << "each host has its own bucket";
  for (int i = 0; i < 12; ++i)
    EXPECT_FALSE(limit.take("host1", t0 + 5s + 60s)) << "full again after a minute";
  EXPECT_TRUE(limit.take("host1", t0 + 5s + 60s)) << "never more than the burst";
}

TEST(FleetRateLimit, ZeroMeansNoLimit) {
  HostRateLimit limit(0);
  for (int i = 0; i < 10000; ++i) ASSERT_FALSE(limit.take("host1", t0));
  EXPECT_EQ(limit.tracked(), 0U);
}

TEST(FleetRateLimit, HostsIdleForAMinuteAreForgottenSoTheMapStaysBounded) {
  HostRateLimit limit(6);
  // 100,000 names, each reporting once, in groups of 1,000 a minute apart;
  // one host emptied its bucket just before the last group.
  for (int g = 0; g < 100; ++g) {
    if (g == 99) {
      for (int i = 0; i < 6; ++i) ASSERT_FALSE(limit.take("busy", t0 + g * 61s));
    }
    for (int i = 0; i < 1000; ++i)
      ASSERT_FALSE(limit.take("host" + std::to_string(g * 1000 + i), t0 + g * 61s));
  }
  EXPECT_LE(limit.tracked(), 2048U) << "only hosts still refilling are kept";
  EXPECT_TRUE(limit.take("busy", t0 + 99 * 61s)) << "a host still refilling keeps its (empty) bucket";
}

}  // namespace
