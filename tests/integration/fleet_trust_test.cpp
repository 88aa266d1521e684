// The fleet's trust model (docs/fleet.md, "Trust model"; issue 19 item 1):
// roles bound to identity, on a real server on 127.0.0.1 with the real
// client, on SQLite and on a real throwaway PostgreSQL 15 cluster; then the
// real binaries end to end: `virtcap fleet token create/list/revoke`, an
// agent process reporting with its own token or a client certificate, the
// legacy shared token, the audit lines.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "fleet/service.h"
#include "fleet/wire.h"
#include "http/client.h"
#include "support/agent_process.h"
#include "support/fleet_fixture.h"
#include "support/test_support.h"
#include "support/tls_pki.h"

using namespace virtcap;
using namespace virtcap::fleet;
using namespace virtcap::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using Backend = virtcap::testing::FleetBackend;
using virtcap::testing::TempDir;

using virtcap::testing::fleet_report_json;

class FleetTrustTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    url_ = virtcap::testing::fleet_database_url(GetParam(), dir_);
    ASSERT_FALSE(url_.empty());
    auto store = open_fleet_store(url_);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(*store);
  }
  // A credential written straight to the database, as `fleet token create` does.
  std::string credential(Role role, const std::string& host = "") {
    auto c = make_credential(role, host, "test", now_ms());
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    if (!c.ok()) return "";
    EXPECT_TRUE(store_->add_credential(c->record).ok());
    return c->token;
  }
  std::unique_ptr<FleetService> start(ServiceOptions o = {}) {
    o.credentials_poll = 20ms;
    o.host_reports_per_minute = 0;  // these tests report one host many times a second
    return start_fleet_service(std::move(o), url_, server_);
  }
  http::ClientResponse call(const std::string& token, const std::string& method, const std::string& path,
                            const json* body = nullptr) {
    http::Client c(server_, token);
    auto r = c.call(method, path, body);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : http::ClientResponse{};
  }
  static std::string message(const http::ClientResponse& r) {
    return r.body.is_object() && r.body.contains("error") ? r.body["error"].value("message", "") : r.raw;
  }

  TempDir dir_{"virtcap-fleet-trust"};
  std::string url_, server_;
  std::unique_ptr<FleetStore> store_;
};

TEST_P(FleetTrustTest, EachRoleMayDoOnlyWhatItsRulesAllow) {
  const std::string agent1 = credential(Role::agent, "host1");
  const std::string agent2 = credential(Role::agent, "host2");
  const std::string op = credential(Role::operator_);
  const std::string reader = credential(Role::reader);
  auto svc = start();
  ASSERT_TRUE(svc);
  const json r1 = fleet_report_json(1, {"COMPUTE_A"}), r2 = fleet_report_json(2, {"COMPUTE_A"});

  // No credential, a malformed one, a wrong secret: 401, nothing changed.
  EXPECT_EQ(call("", "GET", "/v1/hosts").status, 401);
  EXPECT_EQ(call("", "PUT", "/v1/hosts/host1", &r1).status, 401);
  EXPECT_EQ(call("not-a-token", "GET", "/v1/hosts").status, 401);
  EXPECT_EQ(call("", "GET", "/healthz").status, 401);
  EXPECT_EQ(call("", "GET", "/metrics").status, 401);
  EXPECT_EQ(call("", "GET", "/livez").status, 200) << "a liveness probe needs no credential";
  EXPECT_EQ(call(reader, "GET", "/metrics").status, 200);
  std::string wrong = agent1;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  auto refused = call(wrong, "PUT", "/v1/hosts/host1", &r1);
  EXPECT_EQ(refused.status, 401);
  EXPECT_NE(message(refused).find("unknown, or its secret is wrong"), std::string::npos) << refused.raw;

  // An agent reports for its own host only, and reads only that host.
  EXPECT_EQ(call(agent1, "PUT", "/v1/hosts/host1", &r1).status, 200);
  EXPECT_EQ(call(agent2, "PUT", "/v1/hosts/host2", &r2).status, 200);
  refused = call(agent1, "PUT", "/v1/hosts/host2", &r2);
  EXPECT_EQ(refused.status, 403) << refused.raw;
  EXPECT_EQ(refused.body["error"]["code"], "forbidden");
  EXPECT_NE(message(refused).find("role agent, host host1"), std::string::npos) << refused.raw;
  EXPECT_NE(message(refused).find("only its own host"), std::string::npos) << refused.raw;
  // ... so it can neither invent capacity for another host nor register new ones.
  json inflated = fleet_report_json(2, {"COMPUTE_A"}, -1048576000);
  EXPECT_EQ(call(agent1, "PUT", "/v1/hosts/host2", &inflated).status, 403);
  const json r7 = fleet_report_json(7, {"COMPUTE_A"});
  EXPECT_EQ(call(agent1, "PUT", "/v1/hosts/host7", &r7).status, 403);
  EXPECT_EQ(call(agent1, "GET", "/v1/hosts/host1").status, 200);
  EXPECT_EQ(call(agent1, "GET", "/v1/hosts/host2").status, 403);
  EXPECT_EQ(call(agent1, "GET", "/v1/hosts").status, 403);

  // Operator traits and deletes are an operator's alone.
  const json gen = {{"generation", 1}};
  auto op_trait = call(op, "PUT", "/v1/hosts/host1/traits/CUSTOM_GOLD", &gen);
  ASSERT_EQ(op_trait.status, 200) << op_trait.raw;
  const json gen2 = {{"generation", op_trait.body["generation"]}};
  refused = call(agent1, "DELETE", "/v1/hosts/host1/traits/CUSTOM_GOLD", &gen2);
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(message(refused).find("operator (CUSTOM_*) traits"), std::string::npos) << refused.raw;
  EXPECT_EQ(call(agent1, "PUT", "/v1/hosts/host1/traits/CUSTOM_MINE", &gen2).status, 403);
  refused = call(agent1, "DELETE", "/v1/hosts/host1");
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(message(refused).find("only an operator deletes hosts"), std::string::npos) << refused.raw;
  // The agent's next report keeps the operator's trait (it never owned it).
  EXPECT_EQ(call(agent1, "PUT", "/v1/hosts/host1", &r1).status, 200);
  auto h1 = call(op, "GET", "/v1/hosts/host1");
  ASSERT_EQ(h1.status, 200);
  EXPECT_NE(h1.raw.find("CUSTOM_GOLD"), std::string::npos) << h1.raw;

  // A reader queries, and nothing else.
  auto q = call(reader, "GET", "/v1/hosts?required=COMPUTE_A");
  ASSERT_EQ(q.status, 200) << q.raw;
  EXPECT_EQ(q.body["matched"], 2);
  EXPECT_EQ(call(reader, "PUT", "/v1/hosts/host1", &r1).status, 403);
  EXPECT_EQ(call(reader, "DELETE", "/v1/hosts/host2").status, 403);

  // An operator does everything, for any host.
  EXPECT_EQ(call(op, "PUT", "/v1/hosts/host7", &r7).status, 200);
  EXPECT_EQ(call(op, "DELETE", "/v1/hosts/host7").status, 200);
  EXPECT_EQ(call(op, "GET", "/v1/hosts").status, 200);
}

TEST_P(FleetTrustTest, ARevokedCredentialIsRefusedWithinAPollAndTheDatabaseHoldsNoSecret) {
  const std::string agent1 = credential(Role::agent, "host1");
  auto svc = start();
  ASSERT_TRUE(svc);
  const json r1 = fleet_report_json(1, {"COMPUTE_A"});
  ASSERT_EQ(call(agent1, "PUT", "/v1/hosts/host1", &r1).status, 200);

  // A credential made while the service runs is taken within a poll.
  const std::string late = credential(Role::reader);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (call(late, "GET", "/v1/hosts").status != 200 && std::chrono::steady_clock::now() < deadline) {
  }
  EXPECT_EQ(call(late, "GET", "/v1/hosts").status, 200);

  const auto parts = parse_token(agent1);
  ASSERT_TRUE(parts);
  auto rows = store_->list_credentials();
  ASSERT_TRUE(rows.ok());
  for (const auto& c : *rows) {
    EXPECT_EQ(c.hash.find(parts->secret), std::string::npos);
    EXPECT_EQ(c.salt.find(parts->secret), std::string::npos);
    EXPECT_EQ(c.note.find(parts->secret), std::string::npos);
  }
  if (GetParam() == Backend::sqlite) {  // the file itself, pages and journal included
    for (const auto& f : {dir_.sub("fleet.sqlite"), dir_.sub("fleet.sqlite-wal")}) {
      std::ifstream in(f, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      EXPECT_EQ(bytes.find(parts->secret), std::string::npos) << f;
      EXPECT_EQ(bytes.find(agent1), std::string::npos) << f;
    }
  }

  auto revoked = store_->revoke_credential(parts->id, now_ms());
  ASSERT_TRUE(revoked.ok());
  EXPECT_NE(revoked->revoked_ms, 0);
  deadline = std::chrono::steady_clock::now() + 5s;
  http::ClientResponse r;
  do r = call(agent1, "PUT", "/v1/hosts/host1", &r1);
  while (r.status == 200 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(message(r).find("was revoked"), std::string::npos) << r.raw;
  EXPECT_EQ(store_->revoke_credential("0123456789ab", now_ms()).error().code, Errc::not_found);
}

INSTANTIATE_TEST_SUITE_P(Backends, FleetTrustTest, ::testing::Values(Backend::sqlite, Backend::postgres),
                         [](const auto& info) { return virtcap::testing::backend_name(info.param); });

TEST(FleetCredentials, TokensAreWellFormedAndOnlyTheirOwnSecretMatches) {
  auto a = make_credential(Role::agent, "host1", "", 1);
  auto b = make_credential(Role::agent, "host1", "", 1);
  ASSERT_TRUE(a.ok() && b.ok());
  auto pa = parse_token(a->token), pb = parse_token(b->token);
  ASSERT_TRUE(pa && pb);
  EXPECT_EQ(pa->id, a->record.id);
  EXPECT_NE(pa->id, pb->id);
  EXPECT_NE(a->record.salt, b->record.salt);
  EXPECT_TRUE(token_matches(a->record, pa->secret));
  EXPECT_FALSE(token_matches(a->record, pb->secret));
  EXPECT_FALSE(token_matches(b->record, pa->secret));
  for (const char* bad : {"", "vct1.", "vct1.abc.def", "vct2.0123456789ab.", "vct1.0123456789AB.00"})
    EXPECT_FALSE(parse_token(bad)) << bad;
  EXPECT_EQ(make_credential(Role::agent, "", "", 1).error().code, Errc::invalid_argument);
  EXPECT_EQ(make_credential(Role::agent, "..", "", 1).error().code, Errc::invalid_argument);
  EXPECT_EQ(make_credential(Role::reader, "host1", "", 1).error().code, Errc::invalid_argument);
}

// --- the real binaries ---

using virtcap::testing::Agent;

std::pair<int, std::string> run(const std::vector<std::string>& args, std::string* err = nullptr) {
  std::vector<std::string> argv = {VIRTCAP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out = proc::run(argv, std::chrono::seconds(60));
  EXPECT_TRUE(out.ok());
  if (!out.ok()) return {-1, ""};
  if (err) *err = out->err;
  return {out->exit_code, out->out};
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string agent_config(TempDir& dir, const std::string& host, const std::string& fleet_toml) {
  fs::create_directories(dir.sub(host));
  return dir.write(host + ".toml", "[DEFAULT]\nstate_path = \"" + dir.sub(host) + "\"\nhost = \"" + host +
                                       "\"\nperiodic_fuzzy_delay = 0\n[compute]\ndriver = \"fake\"\n"
                                       "[api]\nlisten = \"127.0.0.1:0\"\n[fleet]\nreport_interval = 1\n" +
                                       fleet_toml);
}

// Polls GET /v1/hosts/NAME with `token` until it answers `status` (5 s at most).
int wait_for_host(const std::string& url, const std::string& token, const std::string& name, int status,
                  const std::string& ca = "") {
  http::Client c(http::ClientOptions{.url = url, .token = token, .ca_file = ca});
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  int last = 0;
  do {
    auto r = c.call("GET", "/v1/hosts/" + name);
    last = r.ok() ? r->status : -1;
  } while (last != status && std::chrono::steady_clock::now() < deadline);
  return last;
}

TEST(FleetTrustCli, TokenCreateListRevokeDriveARealAgentAndEveryWriteIsAudited) {
  TempDir dir("virtcap-fleet-trust-cli");
  fs::create_directories(dir.sub("fleet"));
  const std::string cfg = dir.write("fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                                                      "\"\n[fleet_service]\nlisten = \"127.0.0.1:0\"\n");
  std::string err;
  auto [rc, agent_token] = run({"fleet", "token", "create", "--role", "agent", "--host", "edge-1", "-c", cfg,
                                "--note", "edge-1's agent"},
                               &err);
  ASSERT_EQ(rc, 0) << err;
  agent_token = trim(agent_token);
  ASSERT_TRUE(parse_token(agent_token)) << agent_token;
  EXPECT_NE(err.find("shown only this once"), std::string::npos) << err;
  auto [rc2, op_token] = run({"fleet", "token", "create", "--role", "operator", "-c", cfg});
  ASSERT_EQ(rc2, 0);
  op_token = trim(op_token);
  EXPECT_EQ(run({"fleet", "token", "create", "--role", "agent", "-c", cfg}).first, 2)
      << "an agent needs --host";
  EXPECT_EQ(run({"fleet", "token", "create", "--role", "root", "-c", cfg}).first, 2);

  auto [lrc, listed] = run({"fleet", "token", "list", "-c", cfg, "--json"});
  ASSERT_EQ(lrc, 0);
  const json list = json::parse(listed);
  ASSERT_EQ(list.size(), 2u) << listed;
  EXPECT_EQ(list[0]["role"], "agent");
  EXPECT_EQ(list[0]["host"], "edge-1");
  EXPECT_EQ(list[0]["note"], "edge-1's agent");
  EXPECT_EQ(listed.find(parse_token(agent_token)->secret), std::string::npos) << "no secret listed";

  Agent fleet(Agent::fleet_service(cfg));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  // The agent reports with its own token; a second agent claiming edge-1's
  // name with its token cannot write another host's record.
  Agent edge(agent_config(dir, "edge-1", "url = \"" + fleet.url() + "\"\ntoken = \"" + agent_token + "\"\n"));
  ASSERT_TRUE(edge.running()) << edge.exit_output().err;
  EXPECT_EQ(wait_for_host(fleet.url(), op_token, "edge-1", 200), 200);
  Agent impostor(
      agent_config(dir, "edge-2", "url = \"" + fleet.url() + "\"\ntoken = \"" + agent_token + "\"\n"));
  ASSERT_TRUE(impostor.running()) << impostor.exit_output().err;
  EXPECT_TRUE(impostor.wait_for_log("403")) << impostor.log();
  EXPECT_EQ(wait_for_host(fleet.url(), op_token, "edge-2", 404), 404);

  // The operator's CLI: a delete, audited with the credential's id.
  const std::string op_id = parse_token(op_token)->id;
  auto del =
      proc::run({VIRTCAP_BINARY, "hosts", "delete", "edge-2", "--server", fleet.url(), "--token", op_token});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->exit_code, 1) << "no such host: " << del->out << del->err;
  EXPECT_TRUE(fleet.wait_for_log("operation=fleet_host_delete")) << fleet.log();
  EXPECT_NE(fleet.log().find("credential=" + op_id), std::string::npos) << fleet.log();
  EXPECT_TRUE(fleet.wait_for_log("operation=fleet_report")) << fleet.log();
  EXPECT_NE(fleet.log().find("credential=" + parse_token(agent_token)->id), std::string::npos) << fleet.log();
  EXPECT_EQ(fleet.log().find(parse_token(agent_token)->secret), std::string::npos) << "no secret in the log";
  EXPECT_EQ(fleet.log().find(parse_token(op_token)->secret), std::string::npos) << "no secret in the log";

  // Revoked: the running service refuses the agent's next report.
  auto [rrc, revoked] = run({"fleet", "token", "revoke", parse_token(agent_token)->id, "-c", cfg});
  ASSERT_EQ(rrc, 0);
  EXPECT_NE(revoked.find("revoked credential"), std::string::npos) << revoked;
  EXPECT_EQ(wait_for_host(fleet.url(), agent_token, "edge-1", 401), 401);
  EXPECT_TRUE(edge.wait_for_log("401")) << edge.log();
  EXPECT_EQ(run({"fleet", "token", "revoke", "0123456789ab", "-c", cfg}).first, 2);
}

TEST(FleetTrustCli, TheLegacyTokenActsAsAnOperatorWithAWarningAndAnonymousIsNoneByDefault) {
  TempDir dir("virtcap-fleet-legacy");
  fs::create_directories(dir.sub("fleet"));
  const std::string cfg =
      dir.write("fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                                  "\"\n[fleet_service]\nlisten = \"127.0.0.1:0\"\ntoken = \"shared-tok\"\n");
  Agent fleet(Agent::fleet_service(cfg));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  EXPECT_NE(fleet.log().find("[fleet_service] token is set: whoever holds it acts as an operator"),
            std::string::npos)
      << fleet.log();
  Agent a(agent_config(dir, "old-1", "url = \"" + fleet.url() + "\"\ntoken = \"shared-tok\"\n"));
  ASSERT_TRUE(a.running());
  EXPECT_EQ(wait_for_host(fleet.url(), "shared-tok", "old-1", 200), 200);
  EXPECT_EQ(wait_for_host(fleet.url(), "", "old-1", 401), 401) << "no anonymous access by default";
  auto del = proc::run(
      {VIRTCAP_BINARY, "hosts", "delete", "old-1", "--server", fleet.url(), "--token", "shared-tok"});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->exit_code, 0) << del->err;

  // Anonymous access other than none is for loopback only.
  const std::string open_cfg =
      dir.write("open.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                                 "\"\n[fleet_service]\nlisten = \"0.0.0.0:0\"\n"
                                 "anonymous_role = \"reader\"\nallow_insecure = true\n");
  std::string err;
  EXPECT_EQ(run({"fleet", "serve", "--config", open_cfg}, &err).first, 2);
  EXPECT_NE(err.find("anonymous_role = \"reader\" serves requests that carry no credential"),
            std::string::npos)
      << err;
}

TEST(FleetTrustCli, AClientCertificateStandsInForAnAgentTokenBoundToTheHostItNames) {
  virtcap::testing::TestPki pki;
  TempDir dir("virtcap-fleet-cert");
  fs::create_directories(dir.sub("fleet"));
  const auto cert1 = pki.client("cert-1");
  const std::string cfg =
      dir.write("fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.sub("fleet") +
                                  "\"\n[fleet_service]\nlisten = \"127.0.0.1:0\"\n"
                                  "tls_cert = \"" +
                                  pki.server().cert + "\"\ntls_key = \"" + pki.server().key +
                                  "\"\nclient_ca = \"" + pki.ca() + "\"\n");
  auto [rc, op_token] = run({"fleet", "token", "create", "--role", "operator", "-c", cfg});
  ASSERT_EQ(rc, 0);
  op_token = trim(op_token);
  Agent fleet(Agent::fleet_service(cfg));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  const std::string tls = "ca_file = \"" + pki.ca() + "\"\ntls_client_cert = \"" + cert1.cert +
                          "\"\ntls_client_key = \"" + cert1.key + "\"\n";
  Agent good(agent_config(dir, "cert-1", "url = \"" + fleet.url() + "\"\n" + tls));
  ASSERT_TRUE(good.running()) << good.exit_output().err;
  EXPECT_EQ(wait_for_host(fleet.url(), op_token, "cert-1", 200, pki.ca()), 200);
  // The same certificate on a host of another name: 403, nothing registered.
  Agent other(agent_config(dir, "cert-2", "url = \"" + fleet.url() + "\"\n" + tls));
  ASSERT_TRUE(other.running()) << other.exit_output().err;
  EXPECT_TRUE(other.wait_for_log("403")) << other.log();
  EXPECT_EQ(wait_for_host(fleet.url(), op_token, "cert-2", 404, pki.ca()), 404);
  // A certificate from a CA the service does not trust is no credential.
  const auto stranger = pki.client("cert-3", /*trusted=*/false);
  Agent untrusted(agent_config(dir, "cert-3",
                               "url = \"" + fleet.url() + "\"\nca_file = \"" + pki.ca() +
                                   "\"\ntls_client_cert = \"" + stranger.cert + "\"\ntls_client_key = \"" +
                                   stranger.key + "\"\n"));
  ASSERT_TRUE(untrusted.running()) << untrusted.exit_output().err;
  EXPECT_TRUE(untrusted.wait_for_log("401")) << untrusted.log();
  EXPECT_TRUE(fleet.wait_for_log("credential=cert:cert-1")) << fleet.log();
}

}  // namespace
