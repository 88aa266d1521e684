// Drives the real `virtcap` binary (argv, no shell) and checks its output and
// exit codes.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "common/subprocess.h"
#include "support/agent_process.h"

namespace virtcap {
namespace {

namespace fs = std::filesystem;

proc::Output run(std::vector<std::string> args) {
  args.insert(args.begin(), VIRTCAP_BINARY);
  auto r = proc::run(args);
  EXPECT_TRUE(r.ok());
  return r.ok() ? r.value() : proc::Output{};
}

// The shared helpers (tests/support): a mkdtemp directory, a whole file.
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("virtcap-cli") {}
};
using testing::read_file;

TEST(Cli, VersionAndHelpAtEveryLevel) {
  auto v = run({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("virtcap 0."), std::string::npos);
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{{"--help"},
                                                                             {"capabilities", "--help"},
                                                                             {"agent", "--help"},
                                                                             {"config", "--help"},
                                                                             {"config", "show", "--help"},
                                                                             {"docs", "--help"}}) {
    auto h = run(args);
    EXPECT_EQ(h.exit_code, 0) << args[0];
    EXPECT_NE(h.out.find("Usage"), std::string::npos) << args[0];
  }
}

// Every client command has the one option set (src/cli/client_options.h):
// --server and --token default to the family's environment variables
// (VIRTCAP_SERVER / VIRTCAP_TOKEN for the agent's commands, VIRTCAP_FLEET /
// VIRTCAP_FLEET_TOKEN for the fleet's), and a flag wins over its variable.
TEST(Cli, ClientOptionsComeFromTheEnvironmentAndFlagsWin) {
  testing::AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"tok\"\n");
  testing::Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  ::setenv("VIRTCAP_SERVER", agent.url().c_str(), 1);
  ::setenv("VIRTCAP_TOKEN", "tok", 1);
  const auto from_env = run({"tasks", "-f", "value", "-c", "TASK"});
  const auto wrong_token = run({"tasks", "--token", "wrong"});
  ::unsetenv("VIRTCAP_SERVER");
  ::unsetenv("VIRTCAP_TOKEN");
  EXPECT_EQ(from_env.exit_code, 0) << from_env.err;
  EXPECT_NE(from_env.out.find("sync_power_states\n"), std::string::npos) << from_env.out;
  EXPECT_EQ(wrong_token.exit_code, 2) << "--token wins over VIRTCAP_TOKEN: 401\n" << wrong_token.err;
  for (const auto& [args, server_env, token_env] :
       std::vector<std::tuple<std::vector<std::string>, std::string, std::string>>{
           {{"list", "--help"}, "VIRTCAP_SERVER", "VIRTCAP_TOKEN"},
           {{"hosts", "--help"}, "VIRTCAP_FLEET", "VIRTCAP_FLEET_TOKEN"},
           {{"traits", "add", "--help"}, "VIRTCAP_FLEET", "VIRTCAP_FLEET_TOKEN"}}) {
    const auto h = run(args);
    EXPECT_EQ(h.exit_code, 0) << args[0];
    for (const std::string& opt : std::vector<std::string>{
             "--server", "--token", "--ca-file", "-f,--format", "--json", "-c,--column",
             "(env " + server_env + ")", "(env " + token_env + ")", "env VIRTCAP_CA_FILE)"})
      EXPECT_NE(h.out.find(opt), std::string::npos) << opt << " in\n" << h.out;
  }
}

// Both families of client commands check --server by one rule before any
// connection: the same URLs refused, each naming what it expected (exit 2).
TEST(Cli, BothClientFamiliesRefuseTheSameBadServerUrls) {
  for (const std::string& url :
       {std::string("notaurl"), std::string("ftp://h:1"), std::string("http://h:0"),
        std::string("http://h:99999"), std::string("http://h:8a"), std::string("http://user@h:1"),
        std::string("http://h:1/path"), std::string("http://h:80:90"), std::string("http://fe80::1"),
        std::string("http://[::1"), std::string("http://[::1]x"), std::string("http://h\t:1"),
        std::string("http://h:")}) {
    for (const auto& [args, says] : std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"list", "--server", url}, "agent"}, {{"hosts", "--server", url}, "fleet service"}}) {
      const auto r = run(args);
      EXPECT_EQ(r.exit_code, 2) << args[0] << " " << url << ": " << r.err;
      EXPECT_NE(r.err.find("--server '" + url + "'"), std::string::npos) << r.err;
      const bool port = r.err.find("the port must be a number from 1 to 65535") != std::string::npos;
      EXPECT_TRUE(port || r.err.find(says + " URL; expected http://HOST[:PORT]") != std::string::npos)
          << r.err;
    }
  }
}

TEST(Cli, CapabilitiesJsonListsEveryCapabilityWithADoc) {
  auto r = run({"capabilities", "--driver", "fake", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("driver"), "fake");
  ASSERT_GE(j.at("capabilities").size(), 17u);
  for (const auto& c : j.at("capabilities")) {
    EXPECT_FALSE(c.at("doc").get<std::string>().empty()) << c.at("name");
    for (const char* k : {"name", "type", "value", "default", "overridden", "trait"})
      EXPECT_TRUE(c.contains(k));
  }
  EXPECT_NE(std::find(j.at("traits").begin(), j.at("traits").end(), "COMPUTE_NET_ATTACH_INTERFACE"),
            j.at("traits").end());
}

TEST(Cli, CapabilitiesTableAndMarkdown) {
  auto t = run({"capabilities", "--driver", "fake_imagecache"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("has_imagecache"), std::string::npos);
  EXPECT_NE(t.out.find("driver: fake_imagecache"), std::string::npos);
  auto m = run({"capabilities", "--driver", "fake", "--format", "markdown"});
  ASSERT_EQ(m.exit_code, 0);
  EXPECT_NE(m.out.find("| `supports_vtpm` |"), std::string::npos);
}

TEST(Cli, UnknownDriverExits2NamingItAndListingTheAvailableOnes) {
  auto r = run({"capabilities", "--driver", "nosuch"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("available: libvirt, fake"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST(Cli, DriverThatFailsToStartExits1) {
  auto r = run({"capabilities", "--driver", "fake_failing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("fake_failing"), std::string::npos) << r.err;
}

TEST(Cli, BadConfigExits2NamingFileLineAndKey) {
  TempDir dir;
  const auto cfg = dir.write("bad.toml", "[image_cache]\nmanager_interval = \"often\"\n");
  for (const char* cmd : {"capabilities", "agent"}) {
    auto r = run({cmd, "--config", cfg});
    EXPECT_EQ(r.exit_code, 2) << cmd;
    EXPECT_NE(r.err.find(cfg + ":2:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("manager_interval"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("expected an integer"), std::string::npos) << r.err;
  }
}

TEST(Cli, BadArgumentsExit2) {
  EXPECT_EQ(run({}).exit_code, 2);
  EXPECT_EQ(run({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(run({"capabilities", "--format", "xml"}).exit_code, 2);
  EXPECT_EQ(run({"capabilities", "--config", "/nonexistent/virtcap.toml"}).exit_code, 2);
  EXPECT_EQ(run({"capabilities", "--bogus"}).exit_code, 2);
  EXPECT_EQ(run({"docs", "everything"}).exit_code, 2);
}

TEST(Cli, ConfigShowPrintsTheEffectiveConfig) {
  TempDir dir;
  const auto cfg = dir.write("ok.toml", "[compute]\ndriver = \"fake_minimal\"\n");
  auto r = run({"config", "show", "--config", cfg});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("driver = 'fake_minimal'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("manager_interval = 2400"), std::string::npos);
}

// The image-cache task's state, read through GET /v1/tasks.
nlohmann::json image_cache_task(testing::Agent& agent) {
  auto c = agent.client();
  auto tasks = c.request("GET", "/v1/tasks");
  EXPECT_TRUE(tasks.ok()) << (tasks.ok() ? "" : tasks.error().message);
  if (!tasks.ok()) return {};
  for (const auto& t : tasks->at("tasks"))
    if (t.at("name") == "image_cache_manager_pass") return t;
  ADD_FAILURE() << "no image_cache_manager_pass in " << tasks->dump();
  return {};
}

TEST(Cli, AgentLogsTheSkippedImageCacheTaskAndStopsCleanlyOnSigterm) {
  TempDir dir;
  const auto cfg = dir.write(
      "agent.toml",
      "[DEFAULT]\nstate_path = \"" + dir.path().string() +
          "\"\nperiodic_fuzzy_delay = 0\n[compute]\ndriver = \"fake\"\n[api]\nlisten = \"127.0.0.1:0\"\n");
  testing::Agent agent(cfg);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  ASSERT_TRUE(agent.wait_for_log("periodic task 'sync_power_states' ran")) << agent.exit_output().err;
  EXPECT_NE(agent.log().find("periodic task 'image_cache_manager_pass' disabled: driver 'fake' does not "
                             "declare capability has_imagecache"),
            std::string::npos)
      << agent.log();
  const auto task = image_cache_task(agent);
  EXPECT_EQ(task.value("enabled", true), false) << task.dump();
  EXPECT_NE(task.value("disabled_reason", "").find("has_imagecache"), std::string::npos) << task.dump();
  EXPECT_EQ(task.value("runs", -1), 0) << task.dump();
  EXPECT_TRUE(task.contains("last_result") && task.at("last_result").is_null()) << task.dump();
  auto out = agent.stop(SIGTERM);
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.err.find("received SIGTERM"), std::string::npos);
  EXPECT_NE(out.err.find("agent stopped cleanly"), std::string::npos);
}

TEST(Cli, AgentWithImageCacheDriverRunsThePass) {
  TempDir dir;
  const auto cfg = dir.write(
      "agent.toml",
      "[DEFAULT]\nstate_path = \"" + dir.path().string() +
          "\"\nperiodic_fuzzy_delay = 0\n[compute]\ndriver = "
          "\"fake_imagecache\"\n[image_cache]\nmanager_interval = 1\n[api]\nlisten = \"127.0.0.1:0\"\n");
  testing::Agent agent(cfg);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  ASSERT_TRUE(agent.wait_for_log("periodic task 'image_cache_manager_pass' ran")) << agent.exit_output().err;
  const auto task = image_cache_task(agent);
  EXPECT_EQ(task.value("enabled", false), true) << task.dump();
  EXPECT_GE(task.value("runs", 0), 1) << task.dump();
  EXPECT_EQ(task.value("last_result", ""), "ran") << task.dump();
  EXPECT_EQ(task.value("spacing_seconds", 0.0), 1.0) << task.dump();
  EXPECT_FALSE(task.at("last_run").is_null()) << task.dump();
  EXPECT_EQ(agent.stop(SIGINT).exit_code, 0);
}

// `virtcap imagecache` calls the manager's image_cache_pass() directly, not
// through the periodic task: a driver without has_imagecache is refused
// (exit 1, naming the capability) and the image cache is never touched.
TEST(Cli, ImagecacheWithoutHasImagecacheExits1AndTouchesNothing) {
  TempDir dir;
  const auto cfg = dir.write("agent.toml", "[DEFAULT]\nstate_path = \"" + dir.path().string() + "\"\n");
  fs::create_directories(dir.path() / "instances" / "_base");
  const std::string base =
      (dir.path() / "instances" / "_base" / "0123456789abcdef0123456789abcdef01234567").string();
  std::ofstream(base) << "an unused base, old enough to go";
  testing::set_mtime(base, 1000000000);  // 2001
  for (const bool dry_run : {true, false}) {
    std::vector<std::string> args = {"imagecache", "--config", cfg, "--driver", "fake"};
    if (dry_run) args.push_back("--dry-run");
    auto r = run(args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("has_imagecache"), std::string::npos) << r.err;
    EXPECT_TRUE(fs::exists(base)) << "dry_run=" << dry_run;
  }
}

// A misspelt driver is a config error (exit 2, so systemd's
// RestartPreventExitStatus=2 stops the restart loop), found before the state
// directory, the store or the hypervisor is touched.
TEST(Cli, AgentWithUnknownDriverExits2AndTouchesNothing) {
  TempDir dir;
  const auto state = (dir.path() / "state").string();
  const auto cfg =
      dir.write("agent.toml", "[DEFAULT]\nstate_path = \"" + state + "\"\n[compute]\ndriver = \"hyperv\"\n");
  auto r = run({"agent", "--config", cfg});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'hyperv'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fake_imagecache"), std::string::npos) << "lists the available drivers: " << r.err;
  EXPECT_FALSE(fs::exists(state)) << "created the state directory";
}

// docs/capabilities.md and docs/config.md are generated; a stale copy fails.
TEST(Docs, GeneratedDocsAreCurrent) {
  for (const char* what : {"capabilities", "config"}) {
    auto r = run({"docs", what});
    ASSERT_EQ(r.exit_code, 0);
    const auto committed = read_file(fs::path(VIRTCAP_SOURCE_DIR) / "docs" / (std::string(what) + ".md"));
    EXPECT_TRUE(committed == r.out) << "docs/" << what
                                    << ".md is stale; regenerate it with: build/virtcap docs " << what
                                    << " > docs/" << what << ".md";
  }
}

}  // namespace
}  // namespace virtcap
