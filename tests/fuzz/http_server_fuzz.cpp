// libFuzzer target: arbitrary bytes to a live virtcap HTTP server (the
// hardened module the agent API and the fleet service run on) over a
// loopback socket. Each input must get well-formed HTTP or a closed
// connection, never a crash (ASan/UBSan in the server threads) or a hang.
// Seeds: tests/fuzz/corpus/http_server (NUL, newline and invalid UTF-8 in
// paths, chunk framing, huge headers, ...).
#include <cstdio>
#include <cstdlib>

#include "api/json.h"
#include "common/json_text.h"
#include "http/errors.h"
#include "http/server.h"
#include "support/http_fuzz.h"

namespace {

using namespace virtcap;

// Routes shaped like the agent's: parameters, JSON bodies parsed by the
// agent's own request parsers, untrusted text echoed back.
std::vector<http::Route> routes() {
  auto echo = [](const http::Request& r) {
    return http::json_response(200,
                               nlohmann::json{{"path", r.path}, {"params", r.params}, {"query", r.query}});
  };
  auto boot = [](const http::Request& r) {
    auto b = api::parse_boot_request(r.body);
    if (!b.ok()) return http::json_response(400, http::error_json(b.error()));
    return http::json_response(201, nlohmann::json{{"name", b->name}, {"image", b->image}});
  };
  auto pass = [](const http::Request& r) {
    auto d = api::parse_pass_request(r.body);
    if (!d.ok()) return http::json_response(400, http::error_json(d.error()));
    return http::json_response(200, nlohmann::json{{"dry_run", d->dry_run}});
  };
  return {{"GET", "/healthz", http::BodyRule::none, echo},
          {"GET", "/v1/instances", http::BodyRule::none, echo},
          {"POST", "/v1/instances", http::BodyRule::json, boot},
          {"GET", "/v1/instances/{id}", http::BodyRule::none, echo},
          {"DELETE", "/v1/instances/{id}", http::BodyRule::none, echo},
          {"POST", "/v1/instances/{id}/reboot", http::BodyRule::json, pass},
          {"DELETE", "/v1/instances/{id}/interfaces/{mac}", http::BodyRule::none, echo},
          {"POST", "/v1/image-cache/pass", http::BodyRule::json, pass}};
}

int server_port() {
  static http::Server* server = [] {
    http::Options o;
    o.listen = "127.0.0.1:0";
    o.allowed_origins = {"https://dash.example"};
    o.threads = 2;
    return new http::Server(o, routes());  // lives for the whole run
  }();
  static int port = [] {
    auto p = server->bind();
    if (!p.ok() || !server->start().ok()) {
      std::fprintf(stderr, "cannot start the HTTP server\n");
      std::abort();
    }
    return p.value();
  }();
  return port;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int port = server_port();
  const std::string problem =
      virtcap::testing::check_http_answer(port, std::string(reinterpret_cast<const char*>(data), size));
  if (!problem.empty()) {
    std::fprintf(stderr, "HTTP property violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
