// Operator-facing behaviour of the agent process (issue 9).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/fd.h"
#include "http/server.h"
#include "support/agent_process.h"

namespace virtcap {
namespace {

using testing::Agent;
using testing::AgentWorld;
namespace fs = std::filesystem;

proc::Output cli(std::vector<std::string> args) {
  args.insert(args.begin(), VIRTCAP_BINARY);
  auto r = proc::run(args);
  EXPECT_TRUE(r.ok());
  return r.ok() ? r.value() : proc::Output{};
}

// A second agent with the same state_path (even on another port) must refuse
// to start before it touches the store or the hypervisor: the first agent's
// live instances stay active (a second reconcile would mark them lost).
TEST(AgentOps, OneAgentPerStateDirectory) {
  AgentWorld w;
  Agent first(w.config);
  ASSERT_TRUE(first.running()) << first.exit_output().err;
  auto c = first.client();
  const nlohmann::json body{{"name", "web-1"}, {"image", "sample-a"}};
  auto booted = c.request("POST", "/v1/instances", &body);
  ASSERT_TRUE(booted.ok()) << booted.error().message;

  Agent second(w.config);  // listen = 127.0.0.1:0: it would get its own port
  ASSERT_FALSE(second.running());
  EXPECT_EQ(second.exit_output().exit_code, 2);
  EXPECT_NE(second.exit_output().err.find("pid " + std::to_string(first.pid())), std::string::npos)
      << second.exit_output().err;
  EXPECT_EQ(second.exit_output().err.find("reconcile"), std::string::npos) << "it touched the store";

  auto list = c.request("GET", "/v1/instances");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->at("instances").size(), 1u);
  EXPECT_EQ(list->at("instances")[0].at("vm_state"), "active");
  first.stop();
  Agent third(w.config);  // the lock is released with the process
  EXPECT_TRUE(third.running()) << third.exit_output().err;
}

// The API port is bound right after the state lock, before the store is
// opened or the hypervisor connected: a second agent (its own state
// directory) on a taken port exits 2 naming the address, and never creates
// its store.
TEST(AgentOps, TakenPortRefusedBeforeTheStore) {
  AgentWorld w;
  Agent first(w.config);
  ASSERT_TRUE(first.running()) << first.exit_output().err;
  const std::string listen = "127.0.0.1:" + std::to_string(first.port());
  AgentWorld other("[api]\nlisten = \"" + listen + "\"\n");
  Agent second(other.config);
  ASSERT_FALSE(second.running());
  EXPECT_EQ(second.exit_output().exit_code, 2) << second.exit_output().err;
  EXPECT_NE(second.exit_output().err.find("cannot listen on " + listen), std::string::npos)
      << second.exit_output().err;
  EXPECT_NE(second.exit_output().err.find("in use"), std::string::npos) << second.exit_output().err;
  EXPECT_FALSE(fs::exists(other.dir.sub("virtcap.db"))) << "the store was opened";
  EXPECT_EQ(second.exit_output().err.find("libvirt: connected"), std::string::npos) << "the hypervisor was connected";
  EXPECT_EQ(second.exit_output().err.find("reconcile"), std::string::npos) << "it reconciled";
  auto c = first.client();
  EXPECT_TRUE(c.request("GET", "/v1/instances").ok());  // the first one still serves
}

// [DEFAULT] log_format = "json": every line a JSON object with an ISO 8601
// time carrying its UTC offset.
TEST(AgentOps, JsonLogLinesWithIso8601Times) {
  AgentWorld w("[DEFAULT]\n");
  w.write_config("");
  {
    std::string text = testing::read_file(w.config);
    text.replace(text.find("[DEFAULT]\n"), 10, "[DEFAULT]\nlog_format = \"json\"\n");
    std::ofstream(w.config) << text;
  }
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  const auto out = a.stop();
  std::istringstream lines(out.err);
  std::size_t n = 0;
  const std::regex iso(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$)");
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(std::regex_match(j.at("time").get<std::string>(), iso)) << line;
    EXPECT_TRUE(j.at("level").is_string() && j.at("message").is_string() && j.at("logger") == "virtcap") << line;
    ++n;
  }
  EXPECT_GT(n, 3u);
}

// SIGHUP reopens the log file and re-reads the log options instead of
// killing the agent.
TEST(AgentOps, SighupReopensTheLogAndRereadsItsOptions) {
  AgentWorld w("[DEFAULT]\n");
  auto set_defaults = [&](const std::string& extra) {
    w.write_config("");
    std::string text = testing::read_file(w.config);
    text.replace(text.find("[DEFAULT]\n"), 10, "[DEFAULT]\nlog_file = \"/dev/stderr\"\n" + extra);
    std::ofstream(w.config) << text;
  };
  set_defaults("");
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  set_defaults("log_format = \"json\"\n");
  ASSERT_TRUE(a.send(SIGHUP));
  ASSERT_TRUE(a.wait_for_log("SIGHUP: log file reopened")) << a.log();
  const std::string log = a.log();
  const auto last = log.substr(log.rfind('\n', log.find("SIGHUP: log file reopened")) + 1);
  EXPECT_EQ(last.front(), '{') << "the line after SIGHUP is JSON: " << last;
  auto c = a.client();
  EXPECT_TRUE(c.request("GET", "/v1/capabilities").ok());  // still serving
  EXPECT_EQ(a.stop().exit_code, 0);
}

// The exit-code rule: 0 ok, 1 the operation failed, 2 bad usage/argument/
// config (including values the agent refuses and a wrong token), 3 the agent
// could not be reached. --json errors are the API's error object on stdout.
TEST(AgentOps, ExitCodesFollowOneRule) {
  EXPECT_NE(cli({"--help"}).out.find("3 could not reach the agent"), std::string::npos);
  auto unknown = cli({"nosuch"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("unknown command 'nosuch'"), std::string::npos) << unknown.err;
  for (const std::string bad : {"ftp://x", "x", "http://", "http://h:99999", "http://h:port"}) {
    auto r = cli({"list", "--server", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;  // never abort (134)
    EXPECT_NE(r.err.find("--server"), std::string::npos) << r.err;
  }
  auto down = cli({"list", "--json", "--server", "http://127.0.0.1:1"});
  EXPECT_EQ(down.exit_code, 3) << down.err;
  const auto down_json = nlohmann::json::parse(down.out, nullptr, false);
  ASSERT_TRUE(down_json.is_object()) << down.out;
  EXPECT_EQ(down_json["error"]["code"], "unreachable");

  AgentWorld w("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n");
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  const std::string url = a.url() + "/";  // a trailing slash is accepted
  auto ok = cli({"list", "--server", url, "--token", "s3cret"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  auto no_token = cli({"list", "--server", url});
  EXPECT_EQ(no_token.exit_code, 2);
  EXPECT_NE(no_token.err.find("--token"), std::string::npos) << no_token.err;
  auto missing = cli({"show", "nosuch", "--json", "--server", url, "--token", "s3cret"});
  EXPECT_EQ(missing.exit_code, 1);
  const auto missing_json = nlohmann::json::parse(missing.out, nullptr, false);
  ASSERT_TRUE(missing_json.is_object()) << missing.out;
  EXPECT_EQ(missing_json["error"]["code"], "not_found");
  auto zero = cli({"boot", "z", "--image", "sample-a", "--memory", "0", "--server", url, "--token", "s3cret"});
  EXPECT_EQ(zero.exit_code, 2) << zero.err;
}

// `virtcap config validate` runs the agent's start-up checks without
// starting anything.
TEST(AgentOps, ConfigValidateRunsTheStartupChecks) {
  testing::TempDir d("virtcap-validate");
  auto check = [&](const std::string& toml) {
    return cli({"config", "validate", "--config", d.write("c.toml", toml)});
  };
  const std::string state = "[DEFAULT]\nstate_path = \"" + d.sub("state") + "\"\n";
  auto ok = check(state);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("configuration OK"), std::string::npos);
  EXPECT_FALSE(fs::exists(d.sub("state"))) << "validate created the state directory";
  auto driver = check(state + "[compute]\ndriver = \"nosuch\"\n");
  EXPECT_EQ(driver.exit_code, 2);
  EXPECT_NE(driver.err.find("'nosuch'"), std::string::npos) << driver.err;
  auto listen = check(state + "[api]\nlisten = \"0.0.0.0:8774\"\n");
  EXPECT_EQ(listen.exit_code, 2);
  EXPECT_NE(listen.err.find("token"), std::string::npos) << listen.err;
  auto missing = check("[DEFAULT]\nstate_path = \"" + d.sub("no/such/dir") + "\"\n");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("state_path"), std::string::npos) << missing.err;
}

// One output option for every client command: -f table|json|value (--json
// kept), -c COLUMN to pick columns, ISO 8601 times, tables that fit.
TEST(AgentOps, OutputFormatsAndColumns) {
  AgentWorld w;
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  const std::string long_name = "an-instance-name-longer-than-any-fixed-column-width";
  ASSERT_EQ(cli({"boot", long_name, "--image", "sample-a", "--server", a.url()}).exit_code, 0);
  auto table = cli({"list", "--server", a.url()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find(long_name + "  sample-a"), std::string::npos) << "the name fits its column:\n" << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)"))) << table.out;
  auto value = cli({"list", "--server", a.url(), "-f", "value", "-c", "name", "-c", "STATE"});
  EXPECT_EQ(value.out, long_name + " active\n");
  auto picked = cli({"list", "--server", a.url(), "--format", "json", "-c", "name"});
  EXPECT_EQ(nlohmann::json::parse(picked.out), nlohmann::json::parse(R"([{"name":")" + long_name + R"("}])"));
  auto alias = cli({"list", "--server", a.url(), "--json"});
  EXPECT_EQ(nlohmann::json::parse(alias.out).at("instances").size(), 1u);
  auto bad = cli({"list", "--server", a.url(), "-c", "nosuch"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("columns: UUID, NAME"), std::string::npos) << bad.err;
  auto caps = cli({"capabilities", "--server", a.url(), "--format", "json"});
  EXPECT_TRUE(nlohmann::json::parse(caps.out, nullptr, false).contains("traits")) << caps.out;
}

// The bash completion and the man page are generated from the CLI
// definitions: every command is in both, and the completion works in bash.
TEST(AgentOps, CompletionAndManPageAreGeneratedFromTheCli) {
  testing::TempDir d("virtcap-compl");
  const auto compl_ = cli({"docs", "bash-completion"});
  ASSERT_EQ(compl_.exit_code, 0);
  const std::string file = d.write("virtcap.bash", compl_.out);
  auto complete = [&](const std::string& line) {
    const std::string script = "source " + file + "; COMP_WORDS=(" + line + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1));" +
                               " _virtcap; echo \"${COMPREPLY[*]}\"";
    auto r = proc::run({"bash", "-c", script});
    EXPECT_TRUE(r.ok() && r->exit_code == 0);
    return r.ok() ? r->out : std::string();
  };
  EXPECT_EQ(complete("virtcap li"), "list\n");
  EXPECT_EQ(complete("virtcap config va"), "validate\n");
  EXPECT_NE(complete("virtcap boot web --mem").find("--memory"), std::string::npos);
  EXPECT_NE(complete("virtcap list --se").find("--server"), std::string::npos);
  const auto man = cli({"docs", "man"});
  ASSERT_EQ(man.exit_code, 0);
  for (const char* cmd : {"virtcap boot", "virtcap config validate", "virtcap image\\-cache pass", "EXIT STATUS"})
    EXPECT_NE(man.out.find(cmd), std::string::npos) << cmd;
}

// Messages speak the user's words: sizes with units, the flag names typed,
// one range for --vcpus.
TEST(AgentOps, BootTakesSizesAndNamesTheFlags) {
  AgentWorld w;
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  auto g = cli({"boot", "big", "--image", "sample-a", "--memory", "1G", "--server", a.url(), "-f", "value", "-c",
                "memory_mb"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out, "1024\n");
  auto m = cli({"boot", "mid", "--image", "sample-a", "--memory", "512M", "--server", a.url(), "-f", "value", "-c",
                "memory_mb"});
  EXPECT_EQ(m.out, "512\n");
  for (const std::string bad : {"0", "1X", "G", "8"}) {
    auto r = cli({"boot", "x", "--image", "sample-a", "--memory", bad, "--server", a.url()});
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_NE(r.err.find("--memory"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("memory_mb"), std::string::npos) << r.err;
  }
  for (const std::string bad : {"0", "100000"}) {
    auto r = cli({"boot", "x", "--image", "sample-a", "--vcpus", bad, "--server", a.url()});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("--vcpus"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("must be from 1 to "), std::string::npos) << r.err;
  }
}

// Read-only commands write nothing: `virtcap capabilities` loads and
// inspects the driver without creating the state directory or registering
// the host (it once left /var/lib/virtcap behind, which then broke an
// unprivileged run).
TEST(AgentOps, CapabilitiesWritesNothing) {
  testing::TempDir d("virtcap-ro");
  const std::string state = d.sub("state");
  const auto cfg = d.write("c.toml", "[DEFAULT]\nstate_path = \"" + state + "\"\n");
  auto r = cli({"capabilities", "--config", cfg, "--driver", "libvirt", "--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(state)) << "capabilities created " << state;
}

// /metrics counts what happened, wherever it happened: a periodic
// image-cache pass's removals are counted (they once were only for passes
// started through the API), task runs by result, build info, the hypervisor
// gauge and instances by vm_state.
TEST(AgentOps, MetricsCountWhatHappened) {
  AgentWorld w("[image_cache]\nmanager_interval = 1\nremove_unused_original_minimum_age_seconds = 0\n");
  const std::string base_dir = w.dir.sub("instances/_base");
  fs::create_directories(base_dir);
  const std::string unused = base_dir + "/" + testing::sha1_hex_for_test("an-unused-image");
  std::ofstream(unused) << std::string(12345, 'u');
  testing::set_mtime(unused, 1000000000);
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  ASSERT_TRUE(a.wait_for_log("periodic task 'image_cache_manager_pass' ran")) << a.log();
  auto c = a.client();
  const nlohmann::json body{{"name", "m1"}, {"image", "sample-a"}};
  ASSERT_TRUE(c.request("POST", "/v1/instances", &body).ok());
  auto m = c.call("GET", "/metrics");
  ASSERT_TRUE(m.ok());
  const std::string& t = m->raw;
  EXPECT_FALSE(fs::exists(unused));
  EXPECT_NE(t.find("\nvirtcap_image_cache_files_removed_total 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("\nvirtcap_image_cache_bytes_freed_total 12345\n"), std::string::npos) << t;
  EXPECT_TRUE(std::regex_search(t, std::regex("\nvirtcap_image_cache_passes_total [1-9]")) ) << t;
  EXPECT_TRUE(std::regex_search(
      t, std::regex("virtcap_task_runs_total\\{task=\"image_cache_manager_pass\",result=\"ran\"\\} [1-9]")))
      << t;
  EXPECT_NE(t.find("virtcap_task_runs_total{task=\"image_cache_manager_pass\",result=\"failed\"} 0"),
            std::string::npos) << t;
  EXPECT_NE(t.find("virtcap_build_info{version=\""), std::string::npos) << t;
  EXPECT_NE(t.find("\nvirtcap_hypervisor_connected 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("virtcap_instances{vm_state=\"active\"} 1\n"), std::string::npos) << t;
}

}  // namespace
}  // namespace virtcap
