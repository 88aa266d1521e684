// src/fleet/sql.h's DbHealth: the outage record and the bounded reconnect
// back-off every connection to one database shares (the real outages, with
// a real PostgreSQL, are in tests/integration/fleet_outage_test.cpp).
#include <gtest/gtest.h>

#include <string>

#include "fleet/sql.h"

using namespace virtcap::fleet;
using namespace std::chrono_literals;

TEST(FleetDbHealth, BackOffDoublesUpToItsBoundAndOneReachEndsTheOutage) {
  DbHealth h;
  EXPECT_FALSE(h.down());
  EXPECT_TRUE(h.claim_attempt()) << "while up, a dead connection is reset at once";
  EXPECT_EQ(h.retry_in(), 0ms);

  h.failed("connection refused");
  ASSERT_TRUE(h.down());
  const auto since = h.down()->since;
  EXPECT_EQ(h.down()->reason, "connection refused");
  EXPECT_GT(h.retry_in(), 0ms);
  EXPECT_LE(h.retry_in(), DbHealth::kReconnectFirst);
  EXPECT_FALSE(h.claim_attempt()) << "within the back-off step nobody reconnects";

  // Each further failure doubles the step, never past the bound; the
  // outage keeps its start and takes the latest reason.
  std::chrono::milliseconds last = h.retry_in();
  for (int i = 0; i < 10; ++i) {
    h.failed("failure " + std::to_string(i));
    EXPECT_GE(h.retry_in() + 1ms, std::min(last, DbHealth::kReconnectMax));
    EXPECT_LE(h.retry_in(), DbHealth::kReconnectMax);
    last = h.retry_in();
  }
  EXPECT_GT(last, DbHealth::kReconnectMax / 2) << "the step reached its bound";
  EXPECT_EQ(h.down()->since, since);
  EXPECT_EQ(h.down()->reason, "failure 9");
  EXPECT_EQ(h.recoveries(), 0U);

  h.reached();
  EXPECT_FALSE(h.down());
  EXPECT_EQ(h.retry_in(), 0ms);
  EXPECT_TRUE(h.claim_attempt());
  EXPECT_EQ(h.recoveries(), 1U);
  h.reached();
  EXPECT_EQ(h.recoveries(), 1U) << "a reach while up ends no outage";

  // A new outage starts again from the first step.
  h.failed("again");
  EXPECT_LE(h.retry_in(), DbHealth::kReconnectFirst);
}

TEST(FleetDbHealth, ConnectParamsPutTheUrlLastSoItsOwnSettingsWin) {
  const std::string url = "postgresql://u@h/db?connect_timeout=2";
  const auto p = pg_connect_params(url);
  ASSERT_EQ(p.keywords.size(), p.values.size());
  ASSERT_GE(p.keywords.size(), 3U);
  EXPECT_EQ(p.keywords.back(), nullptr);
  EXPECT_EQ(p.values.back(), nullptr);
  EXPECT_STREQ(p.keywords[p.keywords.size() - 2], "dbname");
  EXPECT_EQ(p.values[p.values.size() - 2], url.c_str());
  bool timeout = false, user_timeout = false;
  for (std::size_t i = 0; i + 2 < p.keywords.size(); ++i) {
    timeout = timeout || std::string(p.keywords[i]) == "connect_timeout";
    user_timeout = user_timeout || std::string(p.keywords[i]) == "tcp_user_timeout";
  }
  EXPECT_TRUE(timeout && user_timeout);
}
