// Result's members and the Errc table (include/virtcap/error.h).
#include "virtcap/error.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "http/errors.h"

namespace virtcap {
namespace {

Result<int> half(int v) {
  if (v % 2 != 0) return make_error(Errc::invalid_argument, std::to_string(v) + " is odd");
  return v / 2;
}

TEST(Result, ValueOrGivesTheValueOrTheFallback) {
  EXPECT_EQ(half(8).value_or(-1), 4);
  EXPECT_EQ(half(7).value_or(-1), -1);
  Result<std::string> s = std::string("kept");
  EXPECT_EQ(s.value_or("other"), "kept");
  Result<std::string> e = make_error(Errc::not_found, "gone");
  EXPECT_EQ(e.value_or("other"), "other");
  EXPECT_EQ(std::move(e).value_or("moved"), "moved");
}

TEST(Result, AndThenChainsAndPassesTheFirstErrorThrough) {
  auto quarter = [](int v) { return half(v).and_then(half); };
  EXPECT_EQ(quarter(12).value(), 3);
  auto odd_first = quarter(7);
  ASSERT_FALSE(odd_first.ok());
  EXPECT_EQ(odd_first.error().message, "7 is odd");
  auto odd_second = quarter(6);  // 6 / 2 = 3, then 3 is odd
  ASSERT_FALSE(odd_second.ok());
  EXPECT_EQ(odd_second.error().message, "3 is odd");
  // The function is not called on an error.
  int calls = 0;
  auto r = half(1).and_then([&](int v) -> Result<int> {
    ++calls;
    return v;
  });
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(calls, 0);
}

TEST(Result, TransformMapsTheValueOnly) {
  Result<std::string> t = half(10).transform([](int v) { return std::to_string(v) + "!"; });
  EXPECT_EQ(t.value(), "5!");
  Result<std::string> err = half(3).transform([](int v) { return std::to_string(v); });
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.error().code, Errc::invalid_argument);
  // On an rvalue the value is moved into the function.
  Result<std::string> owned = std::string(100, 'x');
  auto len = std::move(owned).transform([](std::string&& s) { return s.size(); });
  EXPECT_EQ(len.value(), 100u);
}

TEST(Result, StatusAndThenAndTransformRunOnlyOnSuccess) {
  Status good;
  Status bad = make_error(Errc::conflict, "busy");
  EXPECT_EQ(good.transform([] { return 7; }).value(), 7);
  EXPECT_EQ(bad.transform([] { return 7; }).error().code, Errc::conflict);
  EXPECT_EQ(good.and_then([] { return half(4); }).value(), 2);
  EXPECT_EQ(bad.and_then([] { return half(4); }).error().message, "busy");
  int calls = 0;
  Status after = good.transform([&] { ++calls; });
  EXPECT_TRUE(after.ok());
  EXPECT_EQ(calls, 1);
}

TEST(Result, ValueOnAnErrorThrowsTheError) {
  Result<int> r = half(5);
  try {
    (void)r.value();
    FAIL() << "value() on an error did not throw";
  } catch (const BadResultAccess<Error>& e) {
    EXPECT_EQ(e.error().code, Errc::invalid_argument);
    EXPECT_EQ(e.error().message, "5 is odd");
  }
  const Result<int>& cr = r;
  EXPECT_THROW((void)cr.value(), BadResultAccess<Error>);
  EXPECT_THROW((void)*r, BadResultAccess<Error>);
  EXPECT_THROW((void)std::move(r).value(), BadResultAccess<Error>);
  Status st = make_error(Errc::io_error, "disk");
  try {
    st.value();
    FAIL() << "Status::value() on an error did not throw";
  } catch (const BadResultAccess<Error>& e) {
    EXPECT_EQ(e.error().message, "disk");
  }
  EXPECT_NO_THROW(Status().value());
  EXPECT_NO_THROW((void)half(2).value());
}

TEST(Result, InvalidArgumentErrorCarriesItsCode) {
  const Error e = invalid_argument_error("field 'x' must be a string");
  EXPECT_EQ(e.code, Errc::invalid_argument);
  EXPECT_EQ(e.message, "field 'x' must be a string");
}

TEST(Errc, EveryCodeRoundTripsThroughItsNameAndHasAStatus) {
  std::set<std::string_view> names;
  for (Errc c : kAllErrcs) {
    const std::string_view name = to_string(c);
    EXPECT_FALSE(name.empty());
    EXPECT_TRUE(names.insert(name).second) << name << " is the name of two codes";
    ASSERT_TRUE(errc_from_string(name).has_value()) << name;
    EXPECT_EQ(*errc_from_string(name), c) << name;
    const int status = http_status_of(c);
    EXPECT_GE(status, 400) << name;
    EXPECT_LT(status, 600) << name;
    EXPECT_EQ(http::http_status(c), status) << name;  // the API answers with the table's status
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(Errc::internal) + 1);
  EXPECT_FALSE(errc_from_string("no_such_code").has_value());
  EXPECT_FALSE(errc_from_string("").has_value());
}

TEST(Errc, StatusesAreTheOnesTheApiDocuments) {
  EXPECT_EQ(http_status_of(Errc::invalid_argument), 400);
  EXPECT_EQ(http_status_of(Errc::forbidden), 403);
  EXPECT_EQ(http_status_of(Errc::not_found), 404);
  EXPECT_EQ(http_status_of(Errc::already_exists), 409);
  EXPECT_EQ(http_status_of(Errc::conflict), 409);
  EXPECT_EQ(http_status_of(Errc::capability_not_supported), 409);
  EXPECT_EQ(http_status_of(Errc::hypervisor_unavailable), 503);
  EXPECT_EQ(http_status_of(Errc::store_unavailable), 503);
  EXPECT_EQ(http_status_of(Errc::driver_error), 500);
  EXPECT_EQ(http_status_of(Errc::internal), 500);
}

}  // namespace
}  // namespace virtcap
