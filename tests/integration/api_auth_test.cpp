// The bearer token, black-box over HTTP against a real agent: every route
// documented in docs/api.md, /metrics and /healthz included, refuses a wrong
// token of the SAME length as the real one, one that differs only in its
// last byte, and ones carrying a NUL byte; and the refused requests change
// nothing. Requests go over a raw socket so the exact header bytes (a NUL
// included) reach the server.
#include <gtest/gtest.h>

#include <regex>

#include "support/agent_process.h"
#include "support/raw_http.h"

namespace virtcap::testing {
namespace {

constexpr const char* kToken = "s3cret";

struct RawReply {
  int status = -1;      // -1: no HTTP status line came back
  std::string headers;  // the head, as received
  std::string error;    // why there is no status
};

// One HTTP/1.1 request over a fresh connection, with the Authorization
// header value given byte for byte; a 10 s deadline on the whole exchange.
RawReply raw_request(int port, const std::string& method, const std::string& path, const std::string& auth,
                     const std::string& body = "") {
  std::string headers = "Content-Type: application/json\r\n";
  if (!auth.empty()) headers += "Authorization: " + auth + "\r\n";
  if (body.empty()) headers += "Content-Length: 0\r\n";  // request_text frames only non-empty bodies
  RawConnection c(port);
  if (!c.ok()) return {-1, "", "connect failed: " + c.error()};
  const std::chrono::seconds deadline(10);
  if (!c.send(request_text(method, path, headers, body), deadline))
    return {-1, "", "send failed or timed out"};
  const auto a = c.finish(deadline, /*half_close=*/false);
  if (a.timed_out) return {-1, a.text, "no close within 10 s"};
  if (a.status() == 0) return {-1, a.text, "no status line"};
  return {a.status(), a.text.substr(0, a.text.find("\r\n\r\n")), ""};
}

struct Route {
  std::string method, path;
};

// Every route docs/api.md documents ("### `METHOD /path`"): a route added
// to the API and its docs is covered without editing this test.
std::vector<Route> documented_routes() {
  const std::string doc = read_file(std::string(VIRTCAP_SOURCE_DIR) + "/docs/api.md");
  std::vector<Route> out;
  const std::regex heading("^### `([A-Z]+) (/[^`]*)`", std::regex::multiline);
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), heading); it != std::sregex_iterator(); ++it)
    out.push_back({(*it)[1], (*it)[2]});
  return out;
}

std::string fill(std::string path, const std::string& uuid) {
  path = std::regex_replace(path, std::regex("\\{id\\}"), uuid);
  return std::regex_replace(path, std::regex("\\{mac\\}"), "52:54:00:00:00:01");
}

std::string body_for(const Route& r) {
  if (r.method != "POST") return "";
  if (r.path == "/v1/instances") return R"({"name":"intruder","image":"sample-a"})";
  if (r.path == "/v1/image-cache/pass") return R"({"dry_run":false})";
  if (r.path.ends_with("/interfaces")) return "{}";
  return "";
}

// Same length as "s3cret", or the right bytes plus a NUL and more.
struct WrongToken {
  std::string label, value;
};
std::vector<WrongToken> wrong_tokens() {
  using namespace std::string_literals;
  return {
      {"same length, every byte wrong", "xxxxxx"},
      {"same length, first byte wrong", "S3cret"},
      {"differs only in the last byte", "s3cres"},
      {"last byte off by one bit", "s3creu"},
      {"NUL as the last byte", "s3cre\0"s},
      {"NUL in the middle", "s3\0ret"s},
      {"a prefix of the right token", "s3cre"},
      {"the right token and one more byte", "s3cretx"},
      {"empty", ""},
  };
}

std::string printable(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '\0' ? std::string("\\0") : std::string(1, c);
  return out;
}

// Every token in `tokens`, with and without the "Bearer " scheme, and no
// Authorization header at all, on route `r`: 401 (400 allowed for a NUL,
// which a server may refuse as a malformed header), never anything else.
void expect_refused(int port, const Route& r, const std::string& uuid,
                    const std::vector<WrongToken>& tokens) {
  const std::string path = fill(r.path, uuid);
  for (const auto& t : tokens) {
    for (const std::string scheme : {"Bearer ", ""}) {
      const auto reply = raw_request(port, r.method, path, scheme + t.value, body_for(r));
      const std::string what =
          r.method + " " + path + " with " + t.label + " ('" + scheme + printable(t.value) + "')";
      ASSERT_NE(reply.status, -1) << what << ": " << reply.error;
      if (t.value.find('\0') != std::string::npos) {
        EXPECT_TRUE(reply.status == 401 || reply.status == 400) << what << " -> " << reply.status;
      } else {
        EXPECT_EQ(reply.status, 401) << what;
        EXPECT_NE(reply.headers.find("WWW-Authenticate: Bearer"), std::string::npos) << what << reply.headers;
      }
    }
  }
  EXPECT_EQ(raw_request(port, r.method, path, "", body_for(r)).status, 401) << r.method << " " << path;
}

TEST(ApiAuth, EveryRouteRefusesEveryWrongTokenAndChangesNothing) {
  AgentWorld w(std::string("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"") + kToken + "\"\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client(kToken);
  const nlohmann::json keep = {{"name", "keep"}, {"image", "sample-a"}};
  auto rec = c.request("POST", "/v1/instances", &keep);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  const std::string uuid = rec->at("uuid");

  const auto routes = documented_routes();
  ASSERT_GE(routes.size(), 13u) << "docs/api.md lists the routes as ### `METHOD /path`";
  bool saw_metrics = false;
  int v1 = 0;
  for (const auto& r : routes) {
    saw_metrics |= r.path == "/metrics";
    v1 += r.path.starts_with("/v1/");
  }
  EXPECT_TRUE(saw_metrics);
  EXPECT_GE(v1, 11);

  for (const auto& r : routes) expect_refused(agent.port(), r, uuid, wrong_tokens());

  // Nothing any refused request asked for happened.
  auto list = c.request("GET", "/v1/instances");
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->at("instances").size(), 1u) << list->dump();
  EXPECT_EQ(list->at("instances")[0].at("uuid"), uuid);
  EXPECT_EQ(list->at("instances")[0].at("vm_state"), "active");
  auto metrics = c.call("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->raw.find("\nvirtcap_image_cache_passes_total 0\n"), std::string::npos)
      << "a refused POST /v1/image-cache/pass ran a pass:\n"
      << metrics->raw;

  // The right token, byte for byte, passes on every route.
  for (const auto& r : routes) {
    const std::string path = fill(r.path, uuid);
    const auto reply =
        raw_request(agent.port(), r.method, path, std::string("Bearer ") + kToken, body_for(r));
    EXPECT_NE(reply.status, 401) << r.method << " " << path << ": " << reply.error;
    EXPECT_NE(reply.status, -1) << r.method << " " << path << ": " << reply.error;
  }
  expect_agreement(c, w);
}

// Disabled: libmicrohttpd 0.9.75 ends a header value at a NUL byte while it
// parses the request line, before any API sees it, so "Bearer s3cret\0xyz"
// arrives as "Bearer s3cret". That is not a bypass - the whole token must
// still precede the NUL, and a NUL inside the token makes it wrong (the
// "NUL in the middle" case of EveryRouteRefusesEveryWrongToken...) - but it is
// laxer than wanted. The server reads header values with their lengths and
// refuses a NUL it can see; enable this when the library keeps the bytes.
TEST(ApiAuth, DISABLED_TheRightTokenFollowedByANulAndMoreIsRefused) {
  using namespace std::string_literals;
  AgentWorld w(std::string("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"") + kToken + "\"\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  const std::vector<WrongToken> tokens = {{"the right token, then NUL and more", "s3cret\0xyz"s},
                                          {"the right token, then NUL", "s3cret\0"s}};
  for (const auto& r : documented_routes())
    if (r.method == "GET") expect_refused(agent.port(), r, "00000000-0000-4000-8000-000000000000", tokens);
}

}  // namespace
}  // namespace virtcap::testing
