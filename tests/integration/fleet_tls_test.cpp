// The fleet service over TLS, with real processes: `virtcap fleet serve`
// given [fleet_service] tls_cert/tls_key serves HTTPS only; an agent whose
// [fleet] ca_file names the right CA reports to it, one with another CA is
// refused (and says why in its log, never failing); the fleet CLI verifies
// with --ca-file; and the listen rule (non-loopback needs TLS unless
// allow_insecure) holds for `fleet serve` as for the agent. Certificates are
// made at test time (tests/support/tls_pki.h). And `fleet serve` binds its
// port before it opens the database, as the agent does.
#include <gtest/gtest.h>

#include "support/agent_process.h"
#include "support/tls_pki.h"

using namespace virtcap;
using namespace virtcap::testing;

namespace {

std::string fleet_config(TempDir& dir, const std::string& service_toml) {
  fs::create_directories(dir.sub("fleet"));
  // No credentials in these tests: anonymous requests act as operators
  // (allowed on loopback only; the non-loopback cases carry the token).
  const std::string anonymous =
      service_toml.find("token") == std::string::npos ? "anonymous_role = \"operator\"\n" : "";
  return dir.write("fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") + "\"\n[fleet_service]\n" +
                                     anonymous + service_toml);
}

std::string agent_config(TempDir& dir, const std::string& host, const std::string& url,
                         const std::string& ca) {
  fs::create_directories(dir.sub(host));
  return dir.write(host + ".toml", "[DEFAULT]\nstate_path = \"" + dir.sub(host) + "\"\nhost = \"" + host +
                                       "\"\nperiodic_fuzzy_delay = 0\n[compute]\ndriver = \"fake\"\n"
                                       "[api]\nlisten = \"127.0.0.1:0\"\n[fleet]\nurl = \"" +
                                       url + "\"\nreport_interval = 1\nca_file = \"" + ca + "\"\n");
}

// `virtcap ARGS...`: exit code and stdout + stderr.
std::pair<int, std::string> cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {VIRTCAP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out = proc::run(argv, std::chrono::seconds(60));
  EXPECT_TRUE(out.ok());
  return out.ok() ? std::pair{out->exit_code, out->out + out->err} : std::pair{-1, std::string()};
}

TEST(FleetTls, AgentsReportOverHttpsOnlyWithTheRightCaAndTheCliVerifies) {
  TestPki pki;
  TempDir dir("virtcap-fleet-tls");
  const auto cfg = fleet_config(dir, "listen = \"127.0.0.1:0\"\ntls_cert = \"" + pki.server().cert +
                                         "\"\ntls_key = \"" + pki.server().key + "\"\n");
  Agent fleet(Agent::fleet_service(cfg));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  ASSERT_TRUE(fleet.url().starts_with("https://")) << fleet.log();

  // The right CA: the report lands, and the CLI (verifying with --ca-file) sees the host.
  Agent good(agent_config(dir, "tls-good", fleet.url(), pki.ca()));
  ASSERT_TRUE(good.running()) << good.exit_output().err;
  // The other CA: every report is refused as an unknown CA, logged, and the agent keeps running.
  Agent bad(agent_config(dir, "tls-bad", fleet.url(), pki.other_ca()));
  ASSERT_TRUE(bad.running()) << bad.exit_output().err;
  ASSERT_TRUE(bad.wait_for_log("unknown CA", std::chrono::seconds(30))) << bad.exit_output().err;
  EXPECT_TRUE(bad.running());

  // The good agent logs each report that succeeded; after its first one the
  // service knows it.
  ASSERT_TRUE(good.wait_for_log("periodic task 'fleet_report' ran", std::chrono::seconds(30)))
      << good.exit_output().err;
  const auto hosts = cli({"hosts", "--server", fleet.url(), "--ca-file", pki.ca(), "-f", "json"});
  ASSERT_EQ(hosts.first, 0) << hosts.second;
  EXPECT_NE(hosts.second.find("\"tls-good\""), std::string::npos) << hosts.second;
  EXPECT_EQ(hosts.second.find("\"tls-bad\""), std::string::npos) << hosts.second;

  // The CLI without the CA (system store only) or with the other CA: exit 3, naming why.
  for (const auto& ca : {std::string(), pki.other_ca()}) {
    std::vector<std::string> args = {"hosts", "--server", fleet.url()};
    if (!ca.empty()) args.insert(args.end(), {"--ca-file", ca});
    auto [code, out] = cli(args);
    EXPECT_EQ(code, 3) << out;
    EXPECT_NE(out.find("unknown CA"), std::string::npos) << out;
    EXPECT_NE(out.find("fleet service"), std::string::npos) << out;
  }
  // Plain HTTP to the HTTPS port fails cleanly (3), and the service still answers.
  std::string plain = fleet.url();
  plain.replace(0, 5, "http");
  EXPECT_EQ(cli({"hosts", "--server", plain}).first, 3);
  EXPECT_EQ(cli({"hosts", "--server", fleet.url(), "--ca-file", pki.ca()}).first, 0);
  EXPECT_TRUE(fleet.running());
}

TEST(FleetTls, NonLoopbackWithoutTlsIsRefusedUnlessAllowInsecureAndExpiredCertsStopTheStart) {
  TestPki pki;
  TempDir dir("virtcap-fleet-listen");
  {
    auto [code, out] = cli(
        {"fleet", "serve", "--config", fleet_config(dir, "listen = \"0.0.0.0:0\"\ntoken = \"s3cret\"\n")});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("without TLS"), std::string::npos) << out;
    EXPECT_NE(out.find("[fleet_service]"), std::string::npos) << out;
    EXPECT_NE(out.find("allow_insecure"), std::string::npos) << out;
  }
  {
    Agent insecure(Agent::fleet_service(
        fleet_config(dir, "listen = \"0.0.0.0:0\"\ntoken = \"s3cret\"\nallow_insecure = true\n")));
    ASSERT_TRUE(insecure.running()) << insecure.exit_output().err;
    EXPECT_NE(insecure.log().find("allow_insecure = true"), std::string::npos) << insecure.log();
  }
  {
    auto [code, out] = cli({"fleet", "serve", "--config",
                            fleet_config(dir, "listen = \"127.0.0.1:0\"\ntls_cert = \"" + pki.expired().cert +
                                                  "\"\ntls_key = \"" + pki.expired().key + "\"\n")});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("tls_cert"), std::string::npos) << out;
  }
}

// Rotation to a certificate from another CA, without a restart: after
// SIGHUP the fleet service serves the new pair on the same port, an agent
// that trusts only the new CA - refused until then - reports, and the CLI
// verifies with the new CA only.
TEST(FleetTls, SighupServesTheNewCertificateToAgentsAndTheCli) {
  TestPki pki;
  TempDir dir("virtcap-fleet-tls");
  const std::string cert = dir.write("live.pem", read_file(pki.server().cert));
  const std::string key = dir.write("live.key", read_file(pki.server().key));
  Agent fleet(Agent::fleet_service(fleet_config(
      dir, "listen = \"127.0.0.1:0\"\ntls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\n")));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  Agent next(agent_config(dir, "tls-next", fleet.url(), pki.other_ca()));
  ASSERT_TRUE(next.running()) << next.exit_output().err;
  ASSERT_TRUE(next.wait_for_log("unknown CA", std::chrono::seconds(30))) << next.exit_output().err;

  dir.write("live.pem", read_file(pki.other_server().cert));
  dir.write("live.key", read_file(pki.other_server().key));
  ASSERT_TRUE(fleet.send(SIGHUP));
  ASSERT_TRUE(fleet.wait_for_log("TLS: reloaded " + cert));
  ASSERT_TRUE(next.wait_for_log("succeeded again after", std::chrono::seconds(30))) << next.exit_output().err;
  const auto hosts = cli({"hosts", "--server", fleet.url(), "--ca-file", pki.other_ca(), "-f", "json"});
  ASSERT_EQ(hosts.first, 0) << hosts.second;
  EXPECT_NE(hosts.second.find("\"tls-next\""), std::string::npos) << hosts.second;
  EXPECT_EQ(cli({"hosts", "--server", fleet.url(), "--ca-file", pki.ca()}).first, 3)
      << "the old certificate is gone";
  EXPECT_EQ(fleet.stop().exit_code, 0);
}

// Issue 19: a refused TLS pair (a key that does not match its certificate)
// stops the start before the database is created or migrated.
TEST(FleetServe, AMismatchedTlsPairIsRefusedBeforeTheDatabaseIsOpened) {
  TestPki pki;
  TempDir dir("virtcap-fleet-tlspair");
  auto [code, out] = cli({"fleet", "serve", "--config",
                          fleet_config(dir, "listen = \"127.0.0.1:0\"\ntls_cert = \"" + pki.server().cert +
                                                "\"\ntls_key = \"" + pki.expired().key + "\"\n")});
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("tls_key"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir.sub("fleet/fleet.sqlite"))) << "the database was created before the TLS check";
}

TEST(FleetServe, ATakenPortIsRefusedWithExit2BeforeTheDatabaseIsOpened) {
  TempDir dir("virtcap-fleet-port");
  Agent first(Agent::fleet_service(fleet_config(dir, "listen = \"127.0.0.1:0\"\n")));
  ASSERT_TRUE(first.running()) << first.exit_output().err;
  TempDir other("virtcap-fleet-port2");
  const auto cfg = fleet_config(other, "listen = \"127.0.0.1:" + std::to_string(first.port()) + "\"\n");
  auto [code, out] = cli({"fleet", "serve", "--config", cfg});
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("[fleet_service] listen"), std::string::npos) << out;
  EXPECT_NE(out.find(std::to_string(first.port())), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(other.sub("fleet/fleet.sqlite"))) << "the database was opened before the bind";
  EXPECT_TRUE(first.running());
}

}  // namespace
