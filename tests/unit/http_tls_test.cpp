// HTTPS on the shared HTTP server (src/http) and its client (src/api/client):
// real TLS on 127.0.0.1 with certificates made at test time (support/
// tls_pki.h). The client verifies, the server checks its files at start, and
// neither side's failures take the server down.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <future>
#include <random>
#include <thread>

#include "http/client.h"
#include "http/server.h"
#include "http/tls.h"
#include "support/raw_http.h"
#include "support/tls_pki.h"

namespace virtcap {
namespace {

using testing::test_pki;

std::vector<http::Route> ping_routes() {
  return {{"GET", "/v1/ping", http::BodyRule::none,
           [](const http::Request&) {
             return http::json_response(200, nlohmann::json{{"pong", true}});
           }},
          {"POST", "/v1/echo", http::BodyRule::json, [](const http::Request& r) {
             return http::json_response(200, nlohmann::json{{"bytes", r.body.size()}});
           }}};
}

// A started server; `port` is 0 when bind or start failed (`error` says why).
struct Running {
  std::unique_ptr<http::Server> server;
  int port = 0;
  std::string error;
};

Running serve(const testing::TestPki::Pair* pair, const std::string& token = "",
              std::size_t max_body = 1 << 20) {
  http::Options o;
  o.listen = "127.0.0.1:0";
  o.token = token;
  o.threads = 2;
  o.max_body_bytes = max_body;
  if (pair) o.tls_cert = pair->cert, o.tls_key = pair->key;
  Running r{std::make_unique<http::Server>(o, ping_routes()), 0, ""};
  auto port = r.server->bind();
  if (!port.ok()) return {nullptr, 0, port.error().message};
  if (auto st = r.server->start(); !st.ok()) return {nullptr, 0, st.error().message};
  r.port = port.value();
  return r;
}

http::ClientOptions client_to(const std::string& scheme, int port, const std::string& ca_file = "",
                              const std::string& token = "") {
  return {.url = scheme + "://127.0.0.1:" + std::to_string(port),
          .token = token,
          .ca_file = ca_file,
          .timeout = std::chrono::seconds(30)};
}

std::string message_of(const Result<http::ClientResponse>& r) {
  return r.ok() ? "(no error)" : r.error().message;
}

TEST(HttpTls, ClientVerifiesTheServerAgainstItsCaFile) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  EXPECT_STREQ(s.server->scheme(), "https");
  http::Client c(client_to("https", s.port, test_pki().ca()));
  auto r = c.call("GET", "/v1/ping");
  ASSERT_TRUE(r.ok()) << message_of(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body["pong"], true);
  auto again = c.call("GET", "/v1/ping");  // the kept-alive TLS connection
  ASSERT_TRUE(again.ok()) << message_of(again);
  EXPECT_EQ(again->status, 200);
}

TEST(HttpTls, AWrongCaIsRefusedAsAnUnknownCa) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  http::Client c(client_to("https", s.port, test_pki().other_ca()));
  auto r = c.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::io_error);
  for (const char* part :
       {"refused the TLS certificate", "unknown CA", test_pki().other_ca().c_str(), "--ca-file"})
    EXPECT_NE(r.error().message.find(part), std::string::npos) << part << " in " << r.error().message;
}

TEST(HttpTls, WithoutCaFileTheSystemStoreDoesNotTrustATestCa) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  http::Client c(client_to("https", s.port));
  auto r = c.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("unknown CA"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("system CA store"), std::string::npos) << r.error().message;
}

TEST(HttpTls, ACertificateForAnotherNameIsRefusedAsAHostnameMismatch) {
  auto s = serve(&test_pki().other_name());
  ASSERT_NE(s.port, 0) << s.error;
  http::Client c(client_to("https", s.port, test_pki().ca()));
  auto r = c.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("hostname mismatch"), std::string::npos) << r.error().message;
}

TEST(HttpTls, PlainHttpToTheHttpsPortFailsCleanlyAndTheServerServesTheNext) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  http::Client plain(client_to("http", s.port));
  auto r = plain.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok()) << "a plain request got an answer from the HTTPS port";
  EXPECT_EQ(r.error().code, Errc::io_error);
  EXPECT_NE(r.error().message.find("use an https:// URL"), std::string::npos) << r.error().message;
  http::Client tls(client_to("https", s.port, test_pki().ca()));
  auto next = tls.call("GET", "/v1/ping");
  ASSERT_TRUE(next.ok()) << message_of(next);
  EXPECT_EQ(next->status, 200);
}

TEST(HttpTls, HttpsToAPlainPortFailsCleanlyAndTheServerServesTheNext) {
  auto s = serve(nullptr);
  ASSERT_NE(s.port, 0) << s.error;
  EXPECT_STREQ(s.server->scheme(), "http");
  http::Client tls(client_to("https", s.port, test_pki().ca()));
  auto r = tls.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::io_error);
  EXPECT_NE(r.error().message.find("TLS handshake"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("use an http:// URL"), std::string::npos) << r.error().message;
  http::Client plain(client_to("http", s.port));
  auto next = plain.call("GET", "/v1/ping");
  ASSERT_TRUE(next.ok()) << message_of(next);
  EXPECT_EQ(next->status, 200);
}

TEST(HttpTls, AnUnreadableCaFileIsTheCallersMistake) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  http::Client c(client_to("https", s.port, test_pki().dir().sub("no-such-ca.pem")));
  auto r = c.call("GET", "/v1/ping");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().message.find("no-such-ca.pem"), std::string::npos) << r.error().message;
  http::Client not_pem(client_to("https", s.port, test_pki().server().key));
  auto bad = not_pem.call("GET", "/v1/ping");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(test_pki().server().key), std::string::npos) << bad.error().message;
}

// One request through libcurl with headers of our choosing (Host, Origin),
// verified against the test CA; the status, or -1.
long curl_status(int port, const std::vector<std::string>& header_lines, const std::string& body = "") {
  CURL* h = curl_easy_init();
  const std::string url =
      "https://127.0.0.1:" + std::to_string(port) + (body.empty() ? "/v1/ping" : "/v1/echo");
  curl_slist* headers = nullptr;
  for (const auto& line : header_lines) headers = curl_slist_append(headers, line.c_str());
  std::string sink;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CAINFO, test_pki().ca().c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(
      h, CURLOPT_WRITEFUNCTION, +[](char*, size_t size, size_t n, void*) { return size * n; });
  if (!body.empty()) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  long status = -1;
  if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(h);
  return status;
}

TEST(HttpTls, TheHardeningIsTheSameOverTls) {
  auto s = serve(&test_pki().server(), "s3cret", 1024);
  ASSERT_NE(s.port, 0) << s.error;
  const std::string auth = "Authorization: Bearer s3cret";
  EXPECT_EQ(curl_status(s.port, {auth}), 200);
  EXPECT_EQ(curl_status(s.port, {}), 401) << "token over TLS";
  EXPECT_EQ(curl_status(s.port, {"Authorization: Bearer s3creT"}), 401);
  EXPECT_EQ(curl_status(s.port, {auth, "Host: evil.example"}), 403) << "DNS rebinding guard";
  EXPECT_EQ(curl_status(s.port, {auth, "Origin: https://evil.example"}), 403);
  const std::string json_type = "Content-Type: application/json";
  EXPECT_EQ(curl_status(s.port, {auth, json_type}, "{}"), 200);
  EXPECT_EQ(curl_status(s.port, {auth, json_type}, std::string(2000, ' ')), 413) << "body limit";
  EXPECT_EQ(curl_status(s.port, {auth, json_type, "Transfer-Encoding: chunked"}, std::string(2000, ' ')),
            413);
  EXPECT_EQ(curl_status(s.port, {auth, "Content-Type: text/plain"}, "{}"), 415);
}

// Random bytes, and random bytes behind a TLS handshake record header, to
// the HTTPS port: each connection ends (closed or answered) before its
// deadline, and the server then serves a verified request. Under ASan this
// is the crash check for the TLS layer; the seed is fixed, so a failure
// replays.
TEST(HttpTls, HandshakeGarbageDoesNotHurtTheServer) {
  auto s = serve(&test_pki().server());
  ASSERT_NE(s.port, 0) << s.error;
  std::mt19937 rng(13);
  for (int i = 0; i < 300; ++i) {
    std::string bytes(1 + rng() % 2048, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng());
    if (i % 2 == 0)
      bytes.replace(0, std::min<std::size_t>(5, bytes.size()), std::string("\x16\x03\x01\x02\x00", 5));
    testing::RawConnection c(s.port);
    ASSERT_TRUE(c.ok()) << "connection " << i << " refused: the server is gone";
    c.send(bytes, std::chrono::seconds(10));
    const auto a = c.finish(std::chrono::seconds(20));
    ASSERT_FALSE(a.timed_out) << "connection " << i << " neither answered nor closed in 20 s";
  }
  http::Client tls(client_to("https", s.port, test_pki().ca()));
  auto after = tls.call("GET", "/v1/ping");
  ASSERT_TRUE(after.ok()) << message_of(after);
  EXPECT_EQ(after->status, 200);
}

TEST(HttpTls, BadTlsFilesAreRefusedAtStartNamingOptionAndFile) {
  const auto& pki = test_pki();
  const std::int64_t now = std::time(nullptr);
  auto refusal = [&](const std::string& cert, const std::string& key, std::int64_t at) {
    auto r = http::load_tls(cert, key, "[fleet_service]", at);
    EXPECT_FALSE(r.ok()) << cert << " / " << key;
    if (r.ok()) return std::string();
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    return r.error().message;
  };
  auto has = [](const std::string& msg, std::vector<std::string> parts) {
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << p << " in " << msg;
  };
  const std::string missing = pki.dir().sub("missing.pem");
  has(refusal(missing, pki.server().key, now), {"[fleet_service] tls_cert " + missing, "No such file"});
  has(refusal(pki.server().cert, missing, now), {"[fleet_service] tls_key " + missing, "No such file"});
  has(refusal(pki.dir().str(), pki.server().key, now), {"tls_cert", "not a regular file"});
  has(refusal(pki.server().key, pki.server().key, now), {"tls_cert", "no PEM certificate"});
  has(refusal(pki.server().cert, pki.server().cert, now), {"tls_key", "cannot load the private key"});
  has(refusal(pki.server().cert, pki.stray_key(), now),
      {"[fleet_service] tls_key " + pki.stray_key(),
       "does not match the certificate in " + pki.server().cert});
  has(refusal(pki.expired().cert, pki.expired().key, now),
      {"tls_cert", "expired at 2020-01-02T00:00:00Z", "renew"});
  has(refusal(pki.not_yet_valid().cert, pki.not_yet_valid().key, now),
      {"not valid before 2090-01-01T00:00:00Z", "clock"});
  has(refusal(pki.server().cert, "", now), {"must be set together (only tls_cert is set)"});

  auto ok = http::load_tls(pki.server().cert, pki.server().key, "[api]", now);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  ASSERT_TRUE(ok->has_value());
  EXPECT_NE(ok.value()->subject.find("127.0.0.1"), std::string::npos) << ok.value()->subject;
  EXPECT_GT(ok.value()->not_after, now);
  auto none = http::load_tls("", "", "[api]", now);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(HttpTls, TheServerRefusesToBindWithAnExpiredCertificate) {
  auto s = serve(&test_pki().expired());
  EXPECT_EQ(s.port, 0);
  EXPECT_NE(s.error.find("[api] tls_cert"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find("expired"), std::string::npos) << s.error;
}

// Every line the default logger writes, for a test to wait on one: the
// event it names has happened (no sleeping, no polling).
class LogLines final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  bool wait_for(const std::string& needle, std::chrono::seconds limit) {
    return wait_for_count(needle, 1, limit);
  }
  // Until `needle` has been logged `n` times.
  bool wait_for_count(const std::string& needle, std::size_t n, std::chrono::seconds limit) {
    std::unique_lock lock(lines_mu_);
    return seen_.wait_for(lock, limit, [&] {
      std::size_t k = 0;
      for (auto at = text_.find(needle); at != std::string::npos; at = text_.find(needle, at + 1)) ++k;
      return k >= n;
    });
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    {
      std::lock_guard lock(lines_mu_);
      text_.append(msg.payload.data(), msg.payload.size()) += '\n';
    }
    seen_.notify_all();
  }
  void flush_() override {}

 private:
  std::mutex lines_mu_;
  std::condition_variable seen_;
  std::string text_;
};

// A server whose GET /v1/slow waits in its handler until released: a
// request that is in flight for as long as the test wants. Log lines go to
// `lines` while it lives.
struct SlowServer {
  std::promise<void> entered, release;
  std::atomic<bool> entered_once{false};
  std::shared_future<void> released = release.get_future().share();
  std::shared_ptr<LogLines> lines = std::make_shared<LogLines>();
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  std::unique_ptr<http::Server> server;
  int port = 0;
  std::optional<Result<http::ClientResponse>> answer;
  std::thread client;

  explicit SlowServer(http::Options o) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("slow", lines));
    auto routes = ping_routes();
    routes.push_back({"GET", "/v1/slow", http::BodyRule::none, [this](const http::Request&) {
                        if (!entered_once.exchange(true)) entered.set_value();
                        released.wait();
                        return http::json_response(200, nlohmann::json{{"slow", true}});
                      }});
    o.listen = "127.0.0.1:0";
    o.threads = 2;
    server = std::make_unique<http::Server>(o, routes);
    auto bound = server->bind();
    if (bound.ok() && server->start().ok()) port = *bound;
  }
  ~SlowServer() {
    finish();
    server.reset();
    spdlog::set_default_logger(previous);
  }
  // GET /v1/slow from a thread; true once its handler runs.
  bool start_request(const std::string& scheme, const std::string& ca = "") {
    client = std::thread([this, scheme, ca] {
      answer = http::Client(client_to(scheme, port, ca)).call("GET", "/v1/slow", nullptr);
    });
    return entered.get_future().wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  }
  // Lets the handler answer and waits for the client to have its answer.
  void finish() {
    if (!client.joinable()) return;
    release.set_value();
    client.join();
  }
  // "" when the slow request got its whole answer, else what it got.
  std::string answer_problem() const {
    if (!answer) return "no answer";
    if (!answer->ok()) return message_of(*answer);
    if ((*answer)->status != 200 || (*answer)->body != nlohmann::json{{"slow", true}})
      return "HTTP " + std::to_string((*answer)->status) + " " + (*answer)->body.dump();
    return "";
  }
};

// stop() lets a request in flight finish: the answer is whole, and stop()
// returns only after it.
TEST(HttpServer, StopLetsTheRequestInFlightFinish) {
  SlowServer s(http::Options{});
  ASSERT_NE(s.port, 0);
  ASSERT_TRUE(s.start_request("http")) << "the slow request never reached its handler";
  auto stopped = std::async(std::launch::async, [&] { s.server->stop(); });
  EXPECT_TRUE(
      s.lines->wait_for("waiting for 1 request(s) in flight and 0 connection(s)", std::chrono::seconds(30)));
  EXPECT_EQ(stopped.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  s.finish();
  stopped.get();
  EXPECT_EQ(s.answer_problem(), "");
}

// stop() also serves a connection it accepted before its first request had
// arrived (a client still in its TLS handshake or sending its headers).
TEST(HttpServer, StopServesAConnectionAcceptedBeforeItsRequestArrived) {
  SlowServer s(http::Options{});
  ASSERT_NE(s.port, 0);
  spdlog::default_logger()->set_level(spdlog::level::trace);
  testing::RawConnection c(s.port);
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_TRUE(s.lines->wait_for("connection accepted", std::chrono::seconds(30)));
  auto stopped = std::async(std::launch::async, [&] { s.server->stop(); });
  EXPECT_TRUE(
      s.lines->wait_for("waiting for 0 request(s) in flight and 1 connection(s)", std::chrono::seconds(30)));
  EXPECT_TRUE(c.send(testing::request_text("GET", "/v1/ping"), std::chrono::seconds(30)));
  const auto answer = c.finish(std::chrono::seconds(30));
  EXPECT_EQ(answer.status(), 200) << answer.text;
  stopped.get();
}

// Issue 19 (no client can starve a server): one address holds at most
// max_connections_per_address connections; the next is closed as it is
// accepted, while another address and the held connections are served.
TEST(HttpServer, OneAddressHoldsAtMostItsShareOfConnections) {
  http::Options o;
  o.max_connections_per_address = 4;
  SlowServer s(o);
  ASSERT_NE(s.port, 0);
  spdlog::default_logger()->set_level(spdlog::level::trace);
  constexpr std::uint32_t kGreedy = 0x7F000909, kOther = 0x7F000A0A;  // 127.0.9.9, 127.0.10.10
  std::vector<std::unique_ptr<testing::RawConnection>> held;
  for (std::size_t i = 1; i <= 4; ++i) {
    held.push_back(std::make_unique<testing::RawConnection>(s.port, kGreedy));
    ASSERT_TRUE(held.back()->ok()) << held.back()->error();
    // Accepted (and counted) before the next one connects.
    ASSERT_TRUE(s.lines->wait_for_count("connection accepted", i, std::chrono::seconds(30)));
  }
  testing::RawConnection fifth(s.port, kGreedy);
  ASSERT_TRUE(fifth.ok()) << fifth.error();
  (void)fifth.send(testing::request_text("GET", "/v1/ping"));  // may already fail: the server closed it
  const auto refused = fifth.finish(std::chrono::seconds(30));
  EXPECT_FALSE(refused.timed_out);
  EXPECT_EQ(refused.status(), 0) << "a fifth connection from one address was served: " << refused.text;
  testing::RawConnection other(s.port, kOther);
  ASSERT_TRUE(other.ok()) << other.error();
  EXPECT_TRUE(other.send(testing::request_text("GET", "/v1/ping")));
  EXPECT_EQ(other.finish(std::chrono::seconds(30)).status(), 200);
  EXPECT_TRUE(held[0]->send(testing::request_text("GET", "/v1/ping")));
  EXPECT_EQ(held[0]->finish(std::chrono::seconds(30)).status(), 200);
}

// Issue 19 (no client can starve a server): a connection whose request
// headers are not all in within request_header_timeout of its accept is
// closed, though it sends a byte every 200 ms (which resets the idle
// timeout); over TLS a handshake that never ends likewise; and a keep-alive
// connection gets the deadline again after each answer. The idle timeout
// (30 s) is out of reach: only the header deadline closes them in time.
TEST(HttpServer, RequestHeadersMustArriveWithinTheDeadlineThoughBytesKeepComing) {
  using Clock = std::chrono::steady_clock;
  const auto& pki = test_pki();
  for (const bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "TLS" : "plain");
    http::Options o;
    o.request_header_timeout_seconds = 1;
    o.idle_timeout_seconds = 30;
    if (tls) {
      o.tls_cert = pki.server().cert;
      o.tls_key = pki.server().key;
    }
    SlowServer s(o);
    ASSERT_NE(s.port, 0);
    // Seconds until the server closes c, sending c one byte of `bytes`
    // every 200 ms meanwhile (when `bytes` is not empty); -1 when not within 10 s.
    auto seconds_to_close = [](testing::RawConnection& c, const std::string& bytes) {
      const auto t0 = Clock::now();
      for (std::size_t i = 0; Clock::now() - t0 < std::chrono::seconds(10); ++i) {
        if (!bytes.empty()) (void)c.send(bytes.substr(i % bytes.size(), 1), std::chrono::milliseconds(200));
        if (!c.finish(std::chrono::milliseconds(200), false).timed_out)
          return std::chrono::duration<double>(Clock::now() - t0).count();
      }
      return -1.0;
    };
    const std::string trickle =
        tls ? std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + std::string(500, '\0')
            : "GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(500, 'a');
    testing::RawConnection slow(s.port);
    ASSERT_TRUE(slow.ok()) << slow.error();
    const double closed = seconds_to_close(slow, trickle);
    EXPECT_GE(closed, 0.5);
    EXPECT_LE(closed, 5.0) << "a connection trickling header bytes was not closed at the header deadline";
    if (tls) continue;  // a TLS request needs a TLS client (the Load tests have one)
    // Keep-alive: answered, then the deadline runs again from the answer.
    testing::RawConnection kept(s.port);
    ASSERT_TRUE(kept.ok()) << kept.error();
    ASSERT_TRUE(kept.send("GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const double idle = seconds_to_close(kept, "");
    EXPECT_GE(idle, 0.5);
    EXPECT_LE(idle, 5.0) << "an idle keep-alive connection was not closed at the header deadline";
  }
}

// Renewal (reload_tls): a request in flight when the new pair is loaded is
// answered in full; the reload returns once it has, and the next connection,
// on the same port, gets the new certificate and only it.
TEST(HttpTls, AReloadLetsTheRequestInFlightFinishThenServesOnlyTheNewPair) {
  const auto& pki = test_pki();
  testing::TempDir live("virtcap-tls-reload");
  http::Options o;
  o.tls_cert = live.write("live.pem", testing::read_file(pki.server().cert));
  o.tls_key = live.write("live.key", testing::read_file(pki.server().key));
  SlowServer s(o);
  ASSERT_NE(s.port, 0);
  ASSERT_TRUE(s.start_request("https", pki.ca())) << "the slow request never reached its handler";
  live.write("live.pem", testing::read_file(pki.other_server().cert));
  live.write("live.key", testing::read_file(pki.other_server().key));
  auto reloaded = std::async(std::launch::async, [&] { return s.server->reload_tls(); });
  EXPECT_TRUE(s.lines->wait_for("TLS: reloaded", std::chrono::seconds(30)));
  EXPECT_TRUE(
      s.lines->wait_for("waiting for 1 request(s) in flight and 0 connection(s)", std::chrono::seconds(30)));
  EXPECT_EQ(reloaded.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  s.finish();
  const Status reload = reloaded.get();
  EXPECT_EQ(s.answer_problem(), "");
  EXPECT_TRUE(reload.ok()) << reload.error().message;
  auto fresh = http::Client(client_to("https", s.port, pki.other_ca())).call("GET", "/v1/ping", nullptr);
  EXPECT_TRUE(fresh.ok()) << message_of(fresh);
  auto old = http::Client(client_to("https", s.port, pki.ca())).call("GET", "/v1/ping", nullptr);
  EXPECT_FALSE(old.ok()) << "the old certificate is still served";
}

}  // namespace
}  // namespace virtcap
