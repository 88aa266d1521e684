// Issue 19 (bounded clients): every client reads at most 16 MiB of an
// answer, within a time, and a server that is not virtcap's (HTML, the wrong
// JSON shape, an endless body) is exit 1 naming it - never an abort, never
// gigabytes. Against a real socket server on 127.0.0.1 with canned answers.
#include <gtest/gtest.h>

#include "common/subprocess.h"
#include "support/agent_process.h"
#include "support/canned_server.h"
#include "support/test_support.h"

namespace virtcap {
namespace {

using testing::CannedAnswer;
using testing::CannedServer;

proc::Output cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv{VIRTCAP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = proc::run(argv);
  EXPECT_TRUE(r.ok());
  return r.ok() ? r.value() : proc::Output{};
}

constexpr const char* kNotOurs = "did not answer with virtcap's API";

TEST(BoundedClient, HtmlOrTheWrongShapeIsExit1NamingTheServerForBothFamilies) {
  const std::string html = "<html><body>It works!</body></html>";
  CannedServer web([&](const std::string&) { return CannedServer::ok("text/html", html); });
  CannedServer shape([](const std::string&) {
    return CannedServer::ok("application/json", R"({"hosts":5,"instances":"x"})");
  });
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"list", "--server", web.url()},
                                             {"hosts", "--server", web.url()},
                                             {"capabilities", "--server", web.url()},
                                             {"list", "--server", shape.url()},
                                             {"hosts", "--server", shape.url()},
                                             {"hosts", "delete", "h1", "--server", shape.url()}}) {
    SCOPED_TRACE(args[0] + " " + args.back());
    const auto out = cli(args);
    EXPECT_EQ(out.exit_code, 1) << out.err;
    EXPECT_NE(out.err.find(kNotOurs), std::string::npos) << out.err;
    EXPECT_NE(out.err.find(args.back()), std::string::npos) << "names the server: " << out.err;
  }
}

TEST(BoundedClient, HostsDeleteReportsWhatTheServerDeleted) {
  CannedServer fleet(
      [](const std::string&) { return CannedServer::ok("application/json", R"({"deleted":"h1"})"); });
  const auto out = cli({"hosts", "delete", "h1", "--server", fleet.url()});
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_EQ(out.out, "deleted host h1\n");
  CannedServer empty([](const std::string&) { return CannedServer::ok("application/json", "{}"); });
  const auto bad = cli({"hosts", "delete", "h1", "--server", empty.url()});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_EQ(bad.out.find("deleted"), std::string::npos)
      << "a 200 without \"deleted\" is not a deletion: " << bad.out;
}

TEST(BoundedClient, AnAnswerOver16MiBIsNotRead) {
  CannedServer big([](const std::string&) { return CannedServer::endless(std::size_t{256} << 20); });
  for (const char* cmd : {"list", "hosts"}) {
    SCOPED_TRACE(cmd);
    const auto out = cli({cmd, "--server", big.url()});
    EXPECT_EQ(out.exit_code, 1) << out.err;
    EXPECT_NE(out.err.find("more than 16 MiB"), std::string::npos) << out.err;
  }
}

// The agent's fleet report: an HTML answer and an endless one are failed
// reports, logged as such; the agent runs on.
TEST(BoundedClient, TheFleetReporterLogsAServerThatIsNotAFleetServiceAsAFailure) {
  for (const bool endless : {false, true}) {
    SCOPED_TRACE(endless ? "endless body" : "HTML");
    CannedServer fake([&](const std::string&) {
      return endless ? CannedServer::endless(std::size_t{128} << 20)
                     : CannedServer::ok("text/html", "<html></html>");
    });
    testing::AgentWorld w("[fleet]\nurl = \"" + fake.url() + "\"\n");
    testing::Agent a(w.config);
    ASSERT_TRUE(a.running()) << a.exit_output().err;
    ASSERT_TRUE(a.wait_for_log("fleet report to " + fake.url() + " failed: ")) << a.log();
    EXPECT_NE(a.log().find(endless ? "more than 16 MiB" : kNotOurs), std::string::npos) << a.log();
    EXPECT_EQ(a.log().find("fleet report to " + fake.url() + " succeeded"), std::string::npos);
    EXPECT_TRUE(a.running());
    EXPECT_EQ(a.stop().exit_code, 0);
  }
}

}  // namespace
}  // namespace virtcap
