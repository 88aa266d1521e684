// utc_text: the one formatter of a time for people (TLS errors, CLI *_at columns).
#include "common/time_text.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace virtcap {
namespace {

TEST(TimeText, EpochAndDates) {
  EXPECT_EQ(utc_text(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(utc_text(1577923200), "2020-01-02T00:00:00Z");
  EXPECT_EQ(utc_text(1582977599), "2020-02-29T11:59:59Z") << "leap day";
  EXPECT_EQ(utc_text(1583020800), "2020-03-01T00:00:00Z") << "the day after the leap day";
  EXPECT_EQ(utc_text(951782400), "2000-02-29T00:00:00Z") << "2000 is a leap year";
  EXPECT_EQ(utc_text(3786912000), "2090-01-01T00:00:00Z") << "past 2038";
}

TEST(TimeText, NegativeCountsBackFrom1970) {
  EXPECT_EQ(utc_text(-1), "1969-12-31T23:59:59Z");
  EXPECT_EQ(utc_text(-2208988800), "1900-01-01T00:00:00Z");
}

TEST(TimeText, FarFutureAndBeyondGmtime) {
  EXPECT_EQ(utc_text(253402300800), "10000-01-01T00:00:00Z") << "a five-digit year is printed whole";
  // A year beyond int: no calendar date, so the count itself, as date(1) takes it.
  EXPECT_EQ(utc_text(std::numeric_limits<std::int64_t>::max()), "@9223372036854775807");
  EXPECT_EQ(utc_text(std::numeric_limits<std::int64_t>::min()), "@-9223372036854775808");
}

}  // namespace
}  // namespace virtcap
