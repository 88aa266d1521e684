// The fleet service's HTTP API (src/fleet/service.cpp) on a real server on
// 127.0.0.1 with the real client, the same suite on SQLite (a real file) and
// on a real throwaway PostgreSQL 15 cluster: reports, queries, explanations,
// operator trait writes with generations, and bad input getting its
// documented status (docs/fleet.md "API") while changing nothing.
#include <gtest/gtest.h>

#include "fleet/service.h"
#include "fleet/wire.h"
#include "http/client.h"
#include "support/fleet_fixture.h"
#include "support/raw_http.h"
#include "support/test_support.h"

using namespace virtcap;
using namespace virtcap::fleet;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

using Backend = virtcap::testing::FleetBackend;
using virtcap::testing::fleet_uuid;

using virtcap::testing::fleet_report_json;

class FleetApiTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    url_ = virtcap::testing::fleet_database_url(GetParam(), dir_);
    ASSERT_FALSE(url_.empty());
  }
  std::unique_ptr<FleetService> start(const std::string& token = "", ServiceOptions o = {}) {
    o.auth.legacy_token = token;                            // the shared operator credential
    if (token.empty()) o.auth.anonymous = Role::operator_;  // a test bench: no credential needed
    o.host_reports_per_minute = 0;  // these tests report one host many times a second; the limit has its own
    return virtcap::testing::start_fleet_service(std::move(o), url_, server_);
  }
  http::ClientResponse call(const std::string& method, const std::string& path, const json* body = nullptr,
                            const std::string& token = "") {
    http::Client c(server_, token);
    auto r = c.call(method, path, body);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : http::ClientResponse{};
  }

  virtcap::testing::TempDir dir_{"virtcap-fleet-api"};
  std::string url_, server_;
};

TEST_P(FleetApiTest, ReportsQueriesExplanationsAndTraitWrites) {
  auto svc = start();
  ASSERT_TRUE(svc);
  auto b1 = fleet_report_json(1, {"COMPUTE_A", "COMPUTE_B"}, 4);
  auto b2 = fleet_report_json(2, {"COMPUTE_A"});
  auto r = call("PUT", "/v1/hosts/host1", &b1);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["generation"], 1);
  EXPECT_EQ(r.body["uuid"], fleet_uuid(1));
  EXPECT_EQ(r.body["inventories"]["VCPU"]["free"], 12);
  ASSERT_EQ(call("PUT", "/v1/hosts/host2", &b2).status, 200);

  r = call("GET", "/v1/hosts?required=COMPUTE_A,!COMPUTE_B&resources=VCPU:2&explain=true");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["matched"], 1);
  EXPECT_EQ(r.body["hosts_total"], 2);
  ASSERT_EQ(r.body["hosts"].size(), 1U);
  EXPECT_EQ(r.body["hosts"][0]["name"], "host2");
  EXPECT_EQ(r.body["hosts"][0]["uuid"], fleet_uuid(2));
  EXPECT_EQ(r.body["hosts"][0]["free"]["VCPU"], 16);
  EXPECT_EQ(r.body["hosts"][0]["free"]["MEMORY_MB"], 16384 - 512 - 1024);
  EXPECT_TRUE(r.body["hosts"][0]["last_seen_age_s"].is_number());
  EXPECT_GE(r.body["index_generation"].get<std::uint64_t>(), 2U);
  ASSERT_EQ(r.body["excluded"].size(), 1U) << r.raw;
  EXPECT_EQ(r.body["excluded"][0]["reason"], "has_forbidden_trait");
  EXPECT_EQ(r.body["excluded"][0]["trait"], "COMPUTE_B");
  EXPECT_EQ(r.body["excluded"][0]["hosts"], 1);

  // any-of groups, repeated required params, limit
  r = call("GET", "/v1/hosts?required=COMPUTE_A&required=in:COMPUTE_B,COMPUTE_Z&limit=1");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["matched"], 1);
  EXPECT_EQ(r.body["hosts"][0]["name"], "host1");
  EXPECT_FALSE(r.body.contains("excluded"));

  // Operator traits carry the generation: body or If-Match; stale is 409 with the current one.
  r = call("GET", "/v1/hosts/host1");
  ASSERT_EQ(r.status, 200);
  const auto gen = r.body["generation"].get<std::int64_t>();
  json stale = {{"generation", gen - 1}};
  r = call("PUT", "/v1/hosts/host1/traits/CUSTOM_MAINTENANCE", &stale);
  ASSERT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "conflict");
  EXPECT_EQ(r.body["error"]["generation"], gen);
  json fresh = {{"generation", gen}};
  r = call("PUT", "/v1/hosts/host1/traits/CUSTOM_MAINTENANCE", &fresh);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["generation"], gen + 1);
  EXPECT_EQ(r.body["traits"],
            json::parse(R"([{"name":"COMPUTE_A","owner":"agent"},{"name":"COMPUTE_B","owner":"agent"},)"
                        R"({"name":"CUSTOM_MAINTENANCE","owner":"operator"}])"));
  // The agent's next report keeps the operator trait.
  b1["traits"] = json::array({"COMPUTE_A"});
  r = call("PUT", "/v1/hosts/host1", &b1);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["traits"].size(), 2U) << r.raw;
  const auto gen2 = r.body["generation"].get<std::int64_t>();

  r = call("GET", "/v1/hosts/host1?required=COMPUTE_B,!CUSTOM_MAINTENANCE&resources=VCPU:100&explain=true");
  ASSERT_EQ(r.status, 200) << r.raw;
  const auto& e = r.body["explanation"];
  EXPECT_FALSE(e["matches"].get<bool>());
  ASSERT_EQ(e["reasons"].size(), 3U) << r.raw;
  EXPECT_EQ(e["reasons"][0]["message"], "missing required trait COMPUTE_B (no host has this trait)")
      << "the report above removed it";
  EXPECT_EQ(e["reasons"][1]["message"], "has forbidden trait CUSTOM_MAINTENANCE");
  EXPECT_EQ(e["reasons"][2]["reason"], "not_enough_resource");
  EXPECT_EQ(e["reasons"][2]["asked"], 100);

  http::Client c(server_);
  auto del = c.call_raw("DELETE", "/v1/hosts/host1/traits/CUSTOM_MAINTENANCE", "");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->status, 400) << "no generation: " << del->raw;
  json with_gen = {{"generation", gen2}};
  r = call("DELETE", "/v1/hosts/host1/traits/CUSTOM_MAINTENANCE", &with_gen);
  ASSERT_EQ(r.status, 200) << r.raw;
  r = call("DELETE", "/v1/hosts/host1/traits/CUSTOM_MAINTENANCE", &with_gen);
  EXPECT_EQ(r.status, 409) << "the generation moved on: " << r.raw;

  r = call("DELETE", "/v1/hosts/host2");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(call("GET", "/v1/hosts/host2").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/hosts/host2").status, 404);
  r = call("GET", "/v1/hosts?include_down=true");
  EXPECT_EQ(r.body["hosts_total"], 1);
  auto drift = svc->fleet().check_drift();
  ASSERT_TRUE(drift.ok());
  EXPECT_TRUE(drift->hosts.empty());
}

TEST_P(FleetApiTest, BadInputGetsItsDocumentedStatusAndChangesNothing) {
  auto svc = start();
  ASSERT_TRUE(svc);
  auto b1 = fleet_report_json(1, {"COMPUTE_A"});
  ASSERT_EQ(call("PUT", "/v1/hosts/host1", &b1).status, 200);
  const auto gen = call("GET", "/v1/hosts/host1").body["generation"].get<std::int64_t>();
  json g = {{"generation", gen}};
  ASSERT_EQ(call("PUT", "/v1/hosts/host1/traits/CUSTOM_KEEP", &g).status, 200);
  const auto db_before = svc->fleet().store().list_hosts();
  ASSERT_TRUE(db_before.ok());
  const auto index_before = svc->fleet().index().snapshot();
  const auto cur = (*db_before)[0].generation;

  struct Case {
    std::string what, method, path, body;
    int status;
    std::string needle;
  };
  std::string many;
  for (int i = 0; i < 1000; ++i) many += std::string(i ? "&" : "?") + "required=COMPUTE_A";
  auto with = [&](const std::string& field, const json& v) {
    json b = fleet_report_json(1, {"COMPUTE_A"});
    b[field] = v;
    return b.dump();
  };
  const std::string gen_body = json{{"generation", cur}}.dump();
  const std::vector<Case> cases = {
      {"malformed trait name", "PUT", "/v1/hosts/host1/traits/CUSTOM_bad", gen_body, 400, "CUSTOM_bad"},
      {"non-CUSTOM operator trait", "PUT", "/v1/hosts/host1/traits/COMPUTE_B", gen_body, 400, "CUSTOM_"},
      {"trait with a NUL", "PUT", "/v1/hosts/host1/traits/CUSTOM_%00X", gen_body, 400, "trait"},
      {"malformed trait in a query", "GET", "/v1/hosts?required=compute_a", "", 400, "compute_a"},
      {"unknown resource class", "GET", "/v1/hosts?resources=GPU:1", "", 400, "GPU"},
      {"negative amount", "GET", "/v1/hosts?resources=VCPU:-2", "", 400, "negative"},
      {"1,000 required params", "GET", "/v1/hosts" + many, "", 400, "query parameters"},
      {"unknown parameter", "GET", "/v1/hosts?color=red", "", 400, "color"},
      {"bad explain", "GET", "/v1/hosts?explain=maybe", "", 400, "explain"},
      {"stale generation", "PUT", "/v1/hosts/host1/traits/CUSTOM_NEW", json{{"generation", cur - 1}}.dump(),
       409, "generation"},
      {"missing generation", "PUT", "/v1/hosts/host1/traits/CUSTOM_NEW", "{}", 400, "generation is required"},
      {"negative generation", "PUT", "/v1/hosts/host1/traits/CUSTOM_NEW", R"({"generation":-1})", 400,
       ">= 0"},
      {"stale report generation", "PUT", "/v1/hosts/host1", with("generation", cur - 1), 409, "generation"},
      {"report: malformed trait", "PUT", "/v1/hosts/host1", with("traits", json::array({"bad trait"})), 400,
       "bad trait"},
      {"report: CUSTOM trait", "PUT", "/v1/hosts/host1", with("traits", json::array({"CUSTOM_KEEP"})), 400,
       "CUSTOM_"},
      {"report: unknown resource class", "PUT", "/v1/hosts/host1",
       with("inventories", json{{"GPU", {{"total", 1}}}}), 400, "GPU"},
      {"report: negative amount", "PUT", "/v1/hosts/host1",
       with("inventories", json{{"VCPU", {{"total", -4}}}}), 400, "negative"},
      {"report: unknown field", "PUT", "/v1/hosts/host1", with("colour", "red"), 400, "colour"},
      {"report: other uuid", "PUT", "/v1/hosts/host1", with("uuid", fleet_uuid(7)), 409, "uuid"},
      {"report: malformed JSON", "PUT", "/v1/hosts/host1", "{\"uuid\":", 400, "malformed JSON"},
      // Issue 19: names "." and "..", and a NUL in any string (PostgreSQL
      // would cut it, SQLite keep it), are refused alike on both backends.
      // (spelled %2e: the client itself removes literal dot segments)
      {"host named .", "PUT", "/v1/hosts/%2e", b1.dump(), 400, "host name"},
      {"host named ..", "PUT", "/v1/hosts/%2e%2e", b1.dump(), 400, "host name"},
      {"report: 513 traits", "PUT", "/v1/hosts/host1",
       with("traits",
            [] {
              json t = json::array();
              for (int i = 0; i < 513; ++i) t.push_back("COMPUTE_T" + std::to_string(i));
              return t;
            }()),
       400, "max_traits_per_host"},
      {"report: NUL in agent_version", "PUT", "/v1/hosts/host1",
       with("agent_version", std::string("1\0x", 3)), 400, "NUL"},
      {"report: NUL in api_url", "PUT", "/v1/hosts/host1", with("api_url", std::string("http://a\0b", 10)),
       400, "NUL"},
      {"report: invalid UTF-8", "PUT", "/v1/hosts/host1", "{\"uuid\":\"\xff\xfe\"}", 400, ""},
      {"body over the limit", "PUT", "/v1/hosts/host1", std::string(kMaxReportBodyBytes + 1, ' '), 413,
       "limit"},
      {"stale delete", "DELETE", "/v1/hosts/host1/traits/CUSTOM_KEEP", json{{"generation", cur + 1}}.dump(),
       409, "generation"},
  };
  http::Client c(server_);
  for (const auto& k : cases) {
    auto r = c.call_raw(k.method, k.path, k.body);
    ASSERT_TRUE(r.ok()) << k.what << ": " << r.error().message;
    EXPECT_EQ(r->status, k.status) << k.what << ": " << r->raw;
    EXPECT_NE(r->raw.find(k.needle), std::string::npos) << k.what << ": " << r->raw;
    EXPECT_TRUE(r->body.is_object() && r->body.contains("error")) << k.what << ": " << r->raw;
  }
  auto r = c.call_raw("PUT", "/v1/hosts/host1", b1.dump(), "text/plain");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 415);
  EXPECT_EQ(call("PUT", "/v1/hosts/host1/traits/CUSTOM_X", nullptr).status, 400) << "no generation at all";

  const auto db_after = svc->fleet().store().list_hosts();
  ASSERT_TRUE(db_after.ok());
  EXPECT_EQ(*db_after, *db_before);
  EXPECT_EQ(svc->fleet().index().snapshot(), index_before);
}

TEST_P(FleetApiTest, TokenHostAndOriginRulesAsTheAgentApi) {
  auto svc = start("s3cret");
  ASSERT_TRUE(svc);
  auto b1 = fleet_report_json(1, {"COMPUTE_A"});
  EXPECT_EQ(call("PUT", "/v1/hosts/host1", &b1).status, 401);
  EXPECT_EQ(call("GET", "/v1/hosts", nullptr, "wrong").status, 401);
  EXPECT_EQ(call("PUT", "/v1/hosts/host1", &b1, "s3cret").status, 200);
  EXPECT_EQ(call("GET", "/v1/hosts", nullptr, "s3cret").body["matched"], 1);
  EXPECT_EQ(svc->fleet().index().host_count(), 1U);
  EXPECT_EQ(call("POST", "/v1/hosts", nullptr, "s3cret").status, 405);
  EXPECT_EQ(call("GET", "/v1/nothing", nullptr, "s3cret").status, 404);
}

// [fleet_service] host_reports_per_minute: past its burst a host's reports
// get 429 with Retry-After, change nothing, and leave other hosts alone.
TEST_P(FleetApiTest, AHostOverItsReportRateGets429AndChangesNothing) {
  ServiceOptions o;
  o.auth.anonymous = Role::operator_;
  o.host_reports_per_minute = 3;  // a report every 20 s, bursts of 3
  auto svc = virtcap::testing::start_fleet_service(std::move(o), url_, server_);
  ASSERT_TRUE(svc);
  std::int64_t generation = 0;
  for (int i = 0; i < 3; ++i) {
    auto b = fleet_report_json(1, {"COMPUTE_A"}, i);
    auto r = call("PUT", "/v1/hosts/host1", &b);
    ASSERT_EQ(r.status, 200) << "report " << i << " of the burst: " << r.raw;
    generation = r.body["generation"].get<std::int64_t>();
  }
  const int port = std::stoi(server_.substr(server_.rfind(':') + 1));
  const std::string flood = fleet_report_json(1, {"COMPUTE_A", "COMPUTE_FLOOD"}, 9).dump();
  for (int i = 0; i < 50; ++i) {
    const auto a = virtcap::testing::raw_exchange(
        port,
        virtcap::testing::request_text("PUT", "/v1/hosts/host1", "Content-Type: application/json\r\n", flood),
        10s);
    ASSERT_EQ(a.status(), 429) << a.text;
    const json body = json::parse(a.body(), nullptr, false);
    EXPECT_EQ(body["error"].value("code", ""), "rate_limited") << a.text;
    EXPECT_NE(body["error"].value("message", "").find("host_reports_per_minute"), std::string::npos)
        << a.text;
    const auto retry = a.text.find("\r\nRetry-After: ");
    ASSERT_NE(retry, std::string::npos) << a.text;
    const int seconds = std::atoi(a.text.c_str() + retry + 15);
    EXPECT_GE(seconds, 1) << a.text;
    EXPECT_LE(seconds, 20) << a.text;
  }
  auto now = call("GET", "/v1/hosts/host1");
  EXPECT_EQ(now.body["generation"], generation) << "a refused report changes nothing";
  EXPECT_EQ(call("GET", "/v1/hosts?required=COMPUTE_FLOOD").body["matched"], 0);
  auto other = fleet_report_json(2, {"COMPUTE_A"});
  EXPECT_EQ(call("PUT", "/v1/hosts/host2", &other).status, 200) << "another host has its own budget";
  const auto metrics = call("GET", "/metrics").raw;
  EXPECT_NE(metrics.find("\nvirtcap_fleet_reports_rate_limited_total 50\n"), std::string::npos) << metrics;
}

// The periodic recount finds a write the index missed (here: straight to the
// store, with PostgreSQL's LISTEN off) and re-reads that host.
TEST_P(FleetApiTest, PeriodicRecountRepairsAWriteTheIndexMissed) {
  ServiceOptions o;
  o.fleet.listen = false;
  o.drift_check_interval = 1s;
  auto svc = start("", o);
  ASSERT_TRUE(svc);
  auto b1 = fleet_report_json(1, {"COMPUTE_A"});
  auto r = call("PUT", "/v1/hosts/host1", &b1);
  ASSERT_EQ(r.status, 200);
  auto behind = svc->fleet().store().add_operator_trait("host1", "CUSTOM_BEHIND",
                                                        r.body["generation"].get<std::int64_t>());
  ASSERT_TRUE(behind.ok()) << behind.error().message;
  EXPECT_EQ(call("GET", "/v1/hosts?required=CUSTOM_BEHIND").body["matched"], 0) << "the index missed it";
  EXPECT_TRUE(svc->fleet().wait_for_index([](const HostIndex& i) { return i.snapshot()[0].generation == 2; },
                                          std::chrono::steady_clock::now() + 10s))
      << "not repaired by the recount";
  EXPECT_EQ(call("GET", "/v1/hosts?required=CUSTOM_BEHIND").body["matched"], 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, FleetApiTest, ::testing::Values(Backend::sqlite, Backend::postgres),
                         [](const auto& info) { return virtcap::testing::backend_name(info.param); });

}  // namespace
