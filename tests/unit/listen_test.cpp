// Where and how a server may listen: literal loopback only, and the token
// and TLS rules in one place (http::check_listen), used by the agent, its API
// server and the fleet service.
#include <gtest/gtest.h>

#include "common/net_address.h"
#include "config/config.h"
#include "http/server.h"

namespace virtcap {
namespace {

TEST(Listen, IsLoopbackTakesOnlyLiteralLoopbackAndLocalhost) {
  for (const char* h : {"localhost", "127.0.0.1", "127.1.2.3", "127.255.255.254", "::1"})
    EXPECT_TRUE(is_loopback(h)) << h;
  for (const char* h : {"127.evil.example", "127.0.0.1.nip.io", "127.", "0.0.0.0", "::", "", "10.0.0.1",
                        "localhost.example", "::ffff:10.0.0.1", "128.0.0.1"})
    EXPECT_FALSE(is_loopback(h)) << h;
}

http::Options at(const std::string& listen, const std::string& token = "", bool tls = false,
                 bool allow_insecure = false, const std::string& section = "[api]") {
  http::Options o;
  o.listen = listen;
  o.token = token;
  if (tls) o.tls_cert = "/c.pem", o.tls_key = "/k.pem";
  o.allow_insecure = allow_insecure;
  o.config_section = section;
  return o;
}

TEST(Listen, NonLoopbackWithoutATokenIsRefusedInOnePlace) {
  EXPECT_TRUE(http::check_listen(at("127.0.0.1:8774")).ok());
  EXPECT_TRUE(http::check_listen(at("[::1]:8774")).ok());
  auto dns = http::check_listen(at("127.attacker.example:8774", "", true));
  ASSERT_FALSE(dns.ok());
  EXPECT_NE(dns.error().message.find("[api] token"), std::string::npos) << dns.error().message;
  auto fleet = http::check_listen(at("0.0.0.0:8774", "", true, true, "[fleet_service]"));
  ASSERT_FALSE(fleet.ok()) << "TLS and allow_insecure do not lift the token rule";
  EXPECT_NE(fleet.error().message.find("[fleet_service] token"), std::string::npos) << fleet.error().message;
  EXPECT_FALSE(http::check_listen(at("nonsense", "t", true)).ok());
}

TEST(Listen, NonLoopbackWithoutTlsIsRefusedUnlessAllowInsecureWhichWarns) {
  auto plain = http::check_listen(at("0.0.0.0:8774", "t"));
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.error().code, Errc::invalid_argument);
  for (const char* part : {"refusing to listen on 0.0.0.0:8774 without TLS", "clear text", "[api] tls_cert",
                           "allow_insecure = true"})
    EXPECT_NE(plain.error().message.find(part), std::string::npos) << part << " in " << plain.error().message;

  auto insecure = http::check_listen(at("0.0.0.0:8774", "t", false, true));
  ASSERT_TRUE(insecure.ok()) << insecure.error().message;
  EXPECT_NE(insecure->find("plain HTTP on 0.0.0.0:8774 because [api] allow_insecure = true"),
            std::string::npos)
      << *insecure;

  auto tls = http::check_listen(at("10.0.0.1:8774", "t", true));
  ASSERT_TRUE(tls.ok()) << tls.error().message;
  EXPECT_EQ(*tls, "") << "TLS off loopback: no warning";
  auto loopback_insecure = http::check_listen(at("127.0.0.1:8774", "", false, true));
  ASSERT_TRUE(loopback_insecure.ok());
  EXPECT_EQ(*loopback_insecure, "") << "loopback needs neither TLS nor a warning";
}

TEST(Listen, TlsCertAndKeyGoTogether) {
  auto o = at("127.0.0.1:8774");
  o.tls_cert = "/etc/virtcap/cert.pem";
  auto only_cert = http::check_listen(o);
  ASSERT_FALSE(only_cert.ok());
  EXPECT_NE(only_cert.error().message.find(
                "[api] tls_cert and tls_key must be set together (only tls_cert is set)"),
            std::string::npos)
      << only_cert.error().message;
  o.tls_cert.clear();
  o.tls_key = "/etc/virtcap/key.pem";
  auto only_key = http::check_listen(o);
  ASSERT_FALSE(only_key.ok());
  EXPECT_NE(only_key.error().message.find("(only tls_key is set)"), std::string::npos)
      << only_key.error().message;
}

}  // namespace
}  // namespace virtcap
