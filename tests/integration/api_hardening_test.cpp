// Issue 11: no request can kill the agent, no body can exhaust it, no web
// page can drive it, no child inherits its sockets, and a refused boot leaves
// no row. Each test drives a real `virtcap agent` process over a loopback
// socket with bytes no polite client sends.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "store/sqlite/sqlite_store.h"
#include "support/agent_process.h"
#include "support/raw_http.h"

namespace virtcap::testing {
namespace {

using nlohmann::json;

// The agent's peak resident set (VmHWM), in KiB.
long peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

json error_of(const RawAnswer& a) {
  auto j = json::parse(a.body(), nullptr, false);
  return j.is_object() && j.contains("error") && j["error"].is_object() ? j["error"] : json::object();
}

void expect_alive(const Agent& agent) {
  auto r = agent.client().call("GET", "/healthz");
  ASSERT_TRUE(r.ok()) << "the agent no longer answers";
  EXPECT_EQ(r->status, 200);
}

TEST(Hardening, PathWithNewlineAndInvalidUtf8IsA404NotACrash) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  for (const std::string& target :
       std::vector<std::string>{"/%0a%ff", "/%ff", "/v1/%0a", "/v1/instances/%ff", "/v1/instances/%00x",
                                "/v1/instances/a%0ab", "/%c3%28?x=%ff"}) {
    auto a = raw_exchange(agent.port(), request_text("GET", target));
    EXPECT_EQ(a.status(), 404) << target << ": " << a.text;
    auto err = error_of(a);
    EXPECT_EQ(err.value("code", ""), "not_found") << target << ": " << a.text;
    expect_alive(agent);
  }
  // Raw (unescaped) bytes >= 0x80 in the request line.
  auto raw = raw_exchange(agent.port(), request_text("GET", "/v1/instances/\xff\xfe"));
  EXPECT_TRUE(raw.status() == 404 || raw.status() == 400) << raw.text;
  expect_alive(agent);
  EXPECT_TRUE(agent.running());
}

TEST(Hardening, ChunkedBodyPastTheLimitIs413AndPeakMemoryStaysLow) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  expect_alive(agent);
  const long before = peak_rss_kib(agent.pid());
  ASSERT_GT(before, 0);

  RawConnection c(agent.port());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(
      c.send("POST /v1/image-cache/pass HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "100000\r\n" + std::string(1024 * 1024, ' ') + "\r\n";
  bool sent = true;
  for (int i = 0; i < 32 && sent; ++i) sent = c.send(chunk);
  if (sent) c.send("0\r\n\r\n");
  auto a = c.finish(std::chrono::seconds(60), false);
  EXPECT_EQ(a.status(), 413) << a.text.substr(0, 300);
  EXPECT_NE(error_of(a).value("message", "").find("1048576 bytes"), std::string::npos) << a.text;
  expect_alive(agent);
  const long after = peak_rss_kib(agent.pid());
  EXPECT_LT(after - before, 16 * 1024) << "peak RSS grew from " << before << " KiB to " << after << " KiB";

  // The same with Content-Length: 413 naming the real limit, connection answered.
  auto big =
      raw_exchange(agent.port(), request_text("POST", "/v1/instances", "Content-Type: application/json\r\n",
                                              std::string(2 * 1024 * 1024, ' ')));
  EXPECT_EQ(big.status(), 413) << big.text.substr(0, 300);
  EXPECT_NE(error_of(big).value("message", "").find("limit of 1048576 bytes"), std::string::npos) << big.text;
}

TEST(Hardening, CrossSiteRequestsAreRefused) {
  AgentWorld w(
      "[api]\nlisten = \"127.0.0.1:0\"\nallowed_origins = \"https://dash.example:8443\"\n"
      "allowed_hosts = \"compute-1.example\"\n");
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  const std::string boot = R"({"name":"x","image":"sample-a"})";

  auto plain =
      raw_exchange(agent.port(), request_text("POST", "/v1/instances", "Content-Type: text/plain\r\n", boot));
  EXPECT_EQ(plain.status(), 415) << plain.text;
  EXPECT_EQ(error_of(plain).value("code", ""), "unsupported_media_type");
  auto none = raw_exchange(agent.port(), request_text("POST", "/v1/instances", "", boot));
  EXPECT_EQ(none.status(), 415) << none.text;

  auto evil = raw_exchange(
      agent.port(), request_text("POST", "/v1/instances",
                                 "Content-Type: application/json\r\nOrigin: http://evil.example\r\n", boot));
  EXPECT_EQ(evil.status(), 403) << evil.text;
  EXPECT_EQ(error_of(evil).value("code", ""), "forbidden");
  EXPECT_EQ(evil.text.find("Access-Control-Allow-Origin"), std::string::npos);

  const std::string port = std::to_string(agent.port());
  for (const std::string& host : std::vector<std::string>{"evil.example", "evil.example:" + port,
                                                          "127.0.0.1.nip.io:" + port, "10.1.2.3"}) {
    auto rebound = raw_exchange(agent.port(), request_text("GET", "/v1/instances", "", "", host));
    EXPECT_EQ(rebound.status(), 403) << host << ": " << rebound.text;
  }
  for (const std::string& host : std::vector<std::string>{"localhost:" + port, "127.0.0.1:" + port,
                                                          "LOCALHOST", "compute-1.example:" + port}) {
    auto fine = raw_exchange(agent.port(), request_text("GET", "/v1/instances", "", "", host));
    EXPECT_EQ(fine.status(), 200) << host << ": " << fine.text;
  }
  // Nothing was booted by the refused requests.
  EXPECT_EQ(agent.client().request("GET", "/v1/instances")->at("instances").size(), 0u);

  // A listed origin is served, and told so.
  auto listed = raw_exchange(agent.port(), request_text("POST", "/v1/instances",
                                                        "Content-Type: application/json; charset=utf-8\r\n"
                                                        "Origin: https://dash.example:8443\r\n",
                                                        boot));
  EXPECT_EQ(listed.status(), 201) << listed.text;
  EXPECT_NE(listed.text.find("Access-Control-Allow-Origin: https://dash.example:8443"), std::string::npos);
}

TEST(Hardening, BodylessRoutesRefuseAnyBody) {
  AgentWorld w;
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/instances"}, {"DELETE", "/v1/instances/x"}, {"GET", "/healthz"}}) {
    auto a =
        raw_exchange(agent.port(), request_text(method, path, "Content-Type: application/json\r\n", "{}"));
    EXPECT_EQ(a.status(), 400) << method << " " << path << ": " << a.text;
    EXPECT_NE(error_of(a).value("message", "").find("takes no request body"), std::string::npos) << a.text;
    auto chunked = raw_exchange(agent.port(), request_text(method, path,
                                                           "Content-Type: application/json\r\n"
                                                           "Transfer-Encoding: chunked\r\n",
                                                           "") +
                                                  "2\r\n{}\r\n0\r\n\r\n");
    EXPECT_EQ(chunked.status(), 400) << method << " " << path << ": " << chunked.text;
  }
  // A chunked JSON body within the limit is read like any other.
  auto ok = raw_exchange(agent.port(),
                         request_text("POST", "/v1/image-cache/pass",
                                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n") +
                             "f\r\n{\"dry_run\":true\r\n1\r\n}\r\n0\r\n\r\n");
  EXPECT_EQ(ok.status(), 200) << ok.text;
}

TEST(Hardening, ARefusedBootLeavesNoRow) {
  AgentWorld w;
  std::string store_path;
  {
    Agent agent(w.config);
    ASSERT_TRUE(agent.running()) << agent.exit_output().err;
    auto c = agent.client();
    const std::vector<std::pair<std::string, int>> cases = {{"nosuch", 404},
                                                            {"../sample-a", 400},
                                                            {std::string(5000, 'a'), 400},
                                                            {"a b", 400},
                                                            {"sample-a.raw", 404}};
    for (const auto& [image, status] : cases) {
      json body = {{"name", "vm"}, {"image", image}};
      auto r = c.call("POST", "/v1/instances", &body);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->status, status) << image.substr(0, 40) << ": " << r->raw.substr(0, 300);
      EXPECT_LT(r->raw.size(), 1000u) << "the error does not echo a huge id";
    }
    EXPECT_EQ(agent.stop().exit_code, 0);
  }
  auto store = store::SqliteStore::open(w.dir.sub("virtcap.db"));
  ASSERT_TRUE(store.ok()) << store.error().message;
  auto all = store.value()->list_instances("test-host", true);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty()) << all->size() << " rows left by refused boots, first image id "
                            << (all->empty() ? "" : all->front().image_id.substr(0, 40));
}

TEST(Hardening, ChildrenInheritOnlyStdFds) {
  AgentWorld w("overlay_writer = \"qemu-img\"\n");  // (in [libvirt]) a spawn that runs qemu-img
  TempDir bin("virtcap-wrap");
  const std::string log = bin.sub("fds.log");
  const std::string real = must_run({"sh", "-c", "command -v qemu-img"}).out;
  ASSERT_FALSE(real.empty());
  // Records every open fd of the wrapper shell (with find -fprintf: a shell
  // redirection would add fds of its own; the shell holds its script open,
  // which the test tells apart by name), then runs the real qemu-img.
  const std::string wrapper =
      bin.write("qemu-img", "#!/bin/sh\nfind /proc/$$/fd/ -mindepth 1 -fprintf " + log +
                                " '%f -> %l\\n'\necho end >> " + log + "\nexec " +
                                real.substr(0, real.find('\n')) + " \"$@\"\n");
  ::chmod(wrapper.c_str(), 0755);
  const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", (bin.str() + ":" + old_path).c_str(), 1);
  Agent agent(w.config);
  ::setenv("PATH", old_path.c_str(), 1);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;

  // Keep a second client connection open while the spawn runs.
  RawConnection idle(agent.port());
  ASSERT_TRUE(idle.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  json body = {{"name", "fd-check"}, {"image", "sample-a"}};
  auto r = agent.client().call("POST", "/v1/instances", &body);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 201) << r->raw;
  const std::string seen = read_file(log);
  ASSERT_NE(seen.find("end"), std::string::npos) << "the wrapper did not run: " << seen;
  std::istringstream in(seen);
  std::string line;
  int fds = 0;
  while (std::getline(in, line)) {
    const auto arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    const int fd = std::atoi(line.c_str());
    const std::string target = line.substr(arrow + 4);
    ++fds;
    if (fd <= 2) continue;
    EXPECT_EQ(target, wrapper) << "qemu-img inherited fd " << fd << " -> " << target << "\n" << seen;
  }
  EXPECT_GE(fds, 3) << seen;
}

TEST(Hardening, NonUtf8FileNameInTheImageCacheIsReportedNotAnAbort) {
  AgentWorld w;
  fs::create_directories(w.dir.sub("instances/_base"));
  const std::string odd = std::string("junk-\xff\xfe-") + "x";
  w.dir.write("instances/_base/" + odd, "not an image");

  auto local =
      proc::run({VIRTCAP_BINARY, "imagecache", "--config", w.config, "--format", "json", "--dry-run"});
  ASSERT_TRUE(local.ok());
  EXPECT_NE(local->term_signal, SIGABRT) << local->err;
  EXPECT_EQ(local->exit_code, 0) << local->err;
  auto report = json::parse(local->out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << local->out;
  EXPECT_NE(local->out.find("junk-\xef\xbf\xbd\xef\xbf\xbd-x"), std::string::npos)
      << "the name is reported, invalid bytes replaced: " << local->out;

  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  json dry = {{"dry_run", true}};
  auto r = agent.client().call("POST", "/v1/image-cache/pass", &dry);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200) << r->raw;
  EXPECT_TRUE(r->body.is_object()) << r->raw;
  EXPECT_TRUE(fs::exists(w.dir.sub("instances/_base/" + odd))) << "a dry run removes nothing";
}

}  // namespace
}  // namespace virtcap::testing
