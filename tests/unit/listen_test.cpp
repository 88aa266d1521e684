// Where a server may listen: literal loopback only, and the token rule in
// one place (http::check_listen), used by the agent and its API server.
#include <gtest/gtest.h>

#include "config/config.h"
#include "http/server.h"

namespace virtcap {
namespace {

TEST(Listen, IsLoopbackTakesOnlyLiteralLoopbackAndLocalhost) {
  for (const char* h : {"localhost", "127.0.0.1", "127.1.2.3", "127.255.255.254", "::1"})
    EXPECT_TRUE(config::is_loopback(h)) << h;
  for (const char* h : {"127.evil.example", "127.0.0.1.nip.io", "127.", "0.0.0.0", "::", "", "10.0.0.1",
                        "localhost.example", "::ffff:10.0.0.1", "128.0.0.1"})
    EXPECT_FALSE(config::is_loopback(h)) << h;
}

TEST(Listen, NonLoopbackWithoutATokenIsRefusedInOnePlace) {
  EXPECT_TRUE(http::check_listen("127.0.0.1:8774", "", "[api]").ok());
  EXPECT_TRUE(http::check_listen("[::1]:8774", "", "[api]").ok());
  auto dns = http::check_listen("127.attacker.example:8774", "", "[api]");
  ASSERT_FALSE(dns.ok());
  EXPECT_NE(dns.error().message.find("[api] token"), std::string::npos) << dns.error().message;
  EXPECT_FALSE(http::check_listen("0.0.0.0:8774", "", "[fleet_service]").ok());
  EXPECT_TRUE(http::check_listen("0.0.0.0:8774", "t", "[api]").ok());
  EXPECT_FALSE(http::check_listen("nonsense", "t", "[api]").ok());
}

}  // namespace
}  // namespace virtcap
