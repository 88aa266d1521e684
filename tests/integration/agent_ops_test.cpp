// Operator-facing behaviour of the agent process (issue 9).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>

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
  EXPECT_EQ(second.exit_output().err.find("libvirt: connected"), std::string::npos)
      << "the hypervisor was connected";
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
    EXPECT_TRUE(j.at("level").is_string() && j.at("message").is_string() && j.at("logger") == "virtcap")
        << line;
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

// Issue 19: a broken pipe (a client gone mid-answer, libvirtd restarting
// mid-write) never kills the agent or the fleet service: SIGPIPE is ignored
// and each write's EPIPE is read.
TEST(AgentOps, SigpipeNeverKillsTheAgentOrTheFleetService) {
  AgentWorld w;
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  testing::TempDir dir("virtcap-sigpipe");
  const std::string cfg = dir.write(
      "fleet.toml", "[DEFAULT]\nstate_path = \"" + dir.str() +
                        "\"\n[fleet_service]\nanonymous_role = \"operator\"\nlisten = \"127.0.0.1:0\"\n");
  Agent fleet(Agent::fleet_service(cfg));
  ASSERT_TRUE(fleet.running()) << fleet.exit_output().err;
  for (Agent* p : {&a, &fleet}) {
    ASSERT_TRUE(p->send(SIGPIPE));
    ASSERT_TRUE(p->send(SIGPIPE));
    auto c = p->client();
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(c.request("GET", p == &a ? "/v1/capabilities" : "/healthz").ok());
    EXPECT_TRUE(p->running());
    EXPECT_EQ(p->stop().exit_code, 0) << p->log();
  }
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
  auto zero =
      cli({"boot", "z", "--image", "sample-a", "--memory", "0", "--server", url, "--token", "s3cret"});
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
  EXPECT_NE(table.out.find(long_name + "  sample-a"), std::string::npos) << "the name fits its column:\n"
                                                                         << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")))
      << table.out;
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
    const std::string script = "source " + file + "; COMP_WORDS=(" + line +
                               "); COMP_CWORD=$((${#COMP_WORDS[@]}-1));" +
                               " _virtcap; echo \"${COMPREPLY[*]}\"";
    auto r = proc::run({"bash", "-c", script});
    EXPECT_TRUE(r.ok() && r->exit_code == 0);
    return r.ok() ? r->out : std::string();
  };
  EXPECT_EQ(complete("virtcap li"), "list\n");
  EXPECT_EQ(complete("virtcap config va"), "validate\n");
  EXPECT_NE(complete("virtcap boot web --mem").find("--memory"), std::string::npos);
  EXPECT_NE(complete("virtcap list --se").find("--server"), std::string::npos);
  EXPECT_EQ(complete("virtcap image li"), "list\n");
  EXPECT_NE(complete("virtcap boot web --ti").find("--timeout"), std::string::npos);
  const auto man = cli({"docs", "man"});
  ASSERT_EQ(man.exit_code, 0);
  for (const char* cmd : {"virtcap boot", "virtcap config validate", "virtcap image\\-cache pass",
                          "virtcap image list", "EXIT STATUS"})
    EXPECT_NE(man.out.find(cmd), std::string::npos) << cmd;
}

// Messages speak the user's words: sizes with units, the flag names typed,
// one range for --vcpus.
TEST(AgentOps, BootTakesSizesAndNamesTheFlags) {
  AgentWorld w;
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  auto g = cli({"boot", "big", "--image", "sample-a", "--memory", "1G", "--server", a.url(), "-f", "value",
                "-c", "memory_mb"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out, "1024\n");
  auto m = cli({"boot", "mid", "--image", "sample-a", "--memory", "512M", "--server", a.url(), "-f", "value",
                "-c", "memory_mb"});
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

// One range for vCPUs, the driver's discovered max_vcpus, whichever end is
// crossed and wherever it is checked: the CLI's message for one above the
// maximum names --vcpus and gives the range the API gives for 0.
TEST(AgentOps, VcpusRangeIsTheDriversMaxVcpus) {
  AgentWorld w;
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  auto c = a.client();
  auto caps = c.request("GET", "/v1/capabilities");
  ASSERT_TRUE(caps.ok());
  std::int64_t max = 0;
  for (const auto& cap : caps->at("capabilities"))
    if (cap.at("name") == "max_vcpus") max = cap.at("value").get<std::int64_t>();
  ASSERT_GT(max, 0);
  const std::regex range(R"(must be from 1 to (\d+) \(driver '[a-z]+' max_vcpus\))");
  auto range_in = [&](const std::string& text) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(text, m, range)) << text;
    return m.empty() ? std::string() : m.str(0);
  };
  const nlohmann::json zero{{"name", "z"}, {"image", "sample-a"}, {"vcpus", 0}};
  auto api = c.call("POST", "/v1/instances", &zero);
  ASSERT_TRUE(api.ok());
  EXPECT_EQ(api->status, 400);
  const std::string api_range = range_in(api->body["error"]["message"].get<std::string>());
  EXPECT_NE(api_range.find("to " + std::to_string(max) + " "), std::string::npos) << api_range;
  for (const std::int64_t above : {max + 1, std::int64_t{5000}, std::int64_t{1} << 40}) {
    const nlohmann::json big{{"name", "b"}, {"image", "sample-a"}, {"vcpus", above}};
    auto r = c.call("POST", "/v1/instances", &big);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << above;
    EXPECT_EQ(range_in(r->body["error"]["message"].get<std::string>()), api_range) << above;
  }
  auto cli_above =
      cli({"boot", "x", "--image", "sample-a", "--vcpus", std::to_string(max + 1), "--server", a.url()});
  EXPECT_EQ(cli_above.exit_code, 2) << cli_above.err;
  EXPECT_NE(cli_above.err.find("--vcpus " + api_range), std::string::npos) << cli_above.err;
  EXPECT_EQ(range_in(cli_above.err), api_range);
  auto listed = c.request("GET", "/v1/instances");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->at("instances").empty()) << "a refused boot left a record";
}

// `boot` waits for the agent's answer (the instance active) at most
// --timeout seconds: an agent that accepts the connection but never answers
// is a failed operation (exit 1) naming the wait, not an unreachable agent.
TEST(AgentOps, BootTimeoutBoundsTheWait) {
  auto fd = http::listen_socket("127.0.0.1:0");  // accepts (kernel backlog), never answers
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  UniqueFd silent(fd.value());
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  ASSERT_EQ(::getsockname(silent.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  auto r = cli({"boot", "slow", "--image", "sample-a", "--timeout", "1", "--server", url});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("did not answer within 1 s (--timeout)"), std::string::npos) << r.err;
  auto j = cli({"boot", "slow", "--image", "sample-a", "--timeout", "1", "--server", url, "--json"});
  EXPECT_EQ(j.exit_code, 1);
  EXPECT_EQ(nlohmann::json::parse(j.out, nullptr, false)["error"]["code"], "timeout") << j.out;
  EXPECT_EQ(cli({"boot", "x", "--image", "a", "--timeout", "0"}).exit_code, 2);
  EXPECT_NE(cli({"boot", "--help"}).out.find("--timeout"), std::string::npos);
}

// The audit lines of a JSON log, in order.
std::vector<nlohmann::json> audit_lines(const std::string& log) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("audit", false)) out.push_back(j);
  }
  return out;
}

// [DEFAULT] log_format = "json", to a log_file (here the agent's stderr).
void use_json_log(AgentWorld& w) {
  std::string text = testing::read_file(w.config);
  text.replace(text.find("[DEFAULT]\n"), 10,
               "[DEFAULT]\nlog_format = \"json\"\nlog_file = \"/dev/stderr\"\n");
  std::ofstream(w.config) << text;
}

// An audit trail: every state-changing operation logs one info line with
// the operation, the instance's uuid and name, the outcome (failed with the
// reason) and the duration, as structured fields in JSON format.
TEST(AgentOps, AuditLinePerStateChangingOperation) {
  AgentWorld w;
  use_json_log(w);
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--server", a.url()});
    return cli(args).exit_code;
  };
  auto booted =
      cli({"boot", "web-1", "--image", "sample-a", "--server", a.url(), "-f", "value", "-c", "uuid"});
  ASSERT_EQ(booted.exit_code, 0) << booted.err;
  const std::string uuid = booted.out.substr(0, booted.out.find('\n'));
  EXPECT_EQ(run({"boot", "bad", "--image", "no-such-image"}), 1);
  EXPECT_EQ(run({"reboot", "web-1"}), 0);
  EXPECT_EQ(run({"reboot", "nosuch"}), 1);
  auto c = a.client();
  auto nic = c.call("POST", "/v1/instances/" + uuid + "/interfaces", nullptr);
  ASSERT_TRUE(nic.ok());
  const bool attached = nic->status == 201;
  if (attached) {
    EXPECT_EQ(run({"detach-interface", uuid, nic->body.at("mac").get<std::string>()}), 0);
  }
  EXPECT_EQ(run({"delete", uuid}), 0);
  EXPECT_EQ(run({"delete", uuid}), 1);  // already deleted
  const auto lines = audit_lines(a.stop().err);

  struct Want {
    std::string op, uuid, name, outcome, reason_part;
  };
  std::vector<Want> want = {{"boot", uuid, "web-1", "ok", ""},
                            {"boot", "", "bad", "failed", "no-such-image"},
                            {"reboot", uuid, "web-1", "ok", ""},
                            {"reboot", "", "nosuch", "failed", "not_found"},
                            // refused for the driver's capabilities before the instance is looked up
                            {"attach_interface", uuid, attached ? "web-1" : "", attached ? "ok" : "failed",
                             "capability_not_supported"}};
  if (attached) want.push_back({"detach_interface", uuid, "web-1", "ok", ""});
  want.push_back({"delete", uuid, "web-1", "ok", ""});
  want.push_back({"delete", uuid, "", "failed", "not_found"});
  ASSERT_EQ(lines.size(), want.size()) << "audit lines: " << nlohmann::json(lines).dump(1);
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& l = lines[i];
    const auto& x = want[i];
    SCOPED_TRACE(l.dump());
    EXPECT_EQ(l.at("level"), "info");
    EXPECT_EQ(l.at("operation"), x.op);
    EXPECT_EQ(l.at("outcome"), x.outcome);
    if (!x.uuid.empty()) {
      EXPECT_EQ(l.at("uuid"), x.uuid);
    }
    if (!x.name.empty()) {
      EXPECT_EQ(l.at("name"), x.name);
    }
    EXPECT_TRUE(l.at("duration_ms").is_number_integer() && l.at("duration_ms").get<std::int64_t>() >= 0);
    if (x.outcome == "failed") {
      EXPECT_NE(l.at("reason").get<std::string>().find(x.reason_part), std::string::npos);
    } else {
      EXPECT_FALSE(l.contains("reason"));
    }
    EXPECT_NE(l.at("message").get<std::string>().find("operation=" + x.op), std::string::npos);
  }
}

// The start-up reconcile names each instance it marked: the in-process
// test hypervisor forgets its domains with the agent, so a restarted agent
// marks the stored instance lost and audits it (uuid, name, old -> new).
TEST(AgentOps, StartupReconcileAuditsEachInstanceItMarks) {
  AgentWorld w;
  use_json_log(w);
  std::string uuid;
  {
    Agent first(w.config);
    ASSERT_TRUE(first.running()) << first.exit_output().err;
    auto c = first.client();
    const nlohmann::json body{{"name", "db-1"}, {"image", "sample-b"}};
    auto booted = c.request("POST", "/v1/instances", &body);
    ASSERT_TRUE(booted.ok()) << booted.error().message;
    uuid = booted->at("uuid");
    ASSERT_EQ(first.stop().exit_code, 0);
  }
  Agent second(w.config);
  ASSERT_TRUE(second.running()) << second.exit_output().err;
  std::vector<nlohmann::json> fixes;
  for (const auto& l : audit_lines(second.stop().err))
    if (l.at("operation") == "reconcile") fixes.push_back(l);
  ASSERT_EQ(fixes.size(), 1u) << nlohmann::json(fixes).dump(1);
  EXPECT_EQ(fixes[0].at("uuid"), uuid);
  EXPECT_EQ(fixes[0].at("name"), "db-1");
  EXPECT_EQ(fixes[0].at("from"), "active");
  EXPECT_EQ(fixes[0].at("to"), "lost");
  EXPECT_EQ(fixes[0].at("outcome"), "ok");
}

// `virtcap image list`: every file of the image repository with its format
// told by magic (not by name, never by qemu-img), its virtual size (as
// qemu-img reports it), file size, whether its base is cached, and why it
// cannot be booted; names that are not UTF-8 are escaped, never dumped raw.
TEST(AgentOps, ImageListShowsTheRepository) {
  AgentWorld w;
  const std::string images = w.dir.sub("images");
  testing::make_qcow2_image(images + "/disk-q.qcow2", "3M");
  testing::make_qcow2_image(images + "/wrong.raw", "1M");  // a qcow2 named .raw
  std::ofstream(images + "/notes.txt") << "not an image";
  testing::make_raw_image(images + "/\xff\xfe.raw", "1M");
  fs::create_directory(images + "/a-directory");
  Agent a(w.config);
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  ASSERT_EQ(cli({"boot", "web-1", "--image", "sample-a", "--server", a.url()}).exit_code, 0);

  auto listed = cli({"image", "list", "--server", a.url(), "-f", "json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const auto j = nlohmann::json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << listed.out;
  EXPECT_EQ(j.at("repository"), images);
  std::map<std::string, nlohmann::json> by_file;
  std::vector<std::string> order;
  for (const auto& i : j.at("images")) {
    order.push_back(i.at("file"));
    by_file[i.at("file")] = i;
  }
  const std::string bad_name = "\xef\xbf\xbd\xef\xbf\xbd.raw";  // U+FFFD U+FFFD
  EXPECT_EQ(order, (std::vector<std::string>{"disk-q.qcow2", "notes.txt", "sample-a.raw", "sample-b.raw",
                                             "wrong.raw", bad_name}));
  for (const std::string f : {"disk-q.qcow2", "sample-a.raw", "sample-b.raw"}) {
    const auto& i = by_file[f];
    SCOPED_TRACE(i.dump());
    const auto ref = testing::qemu_img_info(images + "/" + f);  // the reference tool
    EXPECT_EQ(i.at("format"), ref.at("format"));
    EXPECT_EQ(i.at("virtual_size"), ref.at("virtual-size"));
    EXPECT_EQ(i.at("file_size").get<std::uint64_t>(), fs::file_size(images + "/" + f));
    EXPECT_TRUE(i.at("problem").is_null());
    EXPECT_EQ(i.at("id"), f.substr(0, f.find('.')));
    EXPECT_EQ(i.at("base_cached"), f == "sample-a.raw") << "only the booted image's base is cached";
  }
  EXPECT_EQ(by_file["wrong.raw"].at("format"), "qcow2");
  EXPECT_NE(by_file["wrong.raw"].at("problem").get<std::string>().find("named .raw but is a qcow2"),
            std::string::npos);
  EXPECT_EQ(by_file["notes.txt"].at("format"), "raw");
  EXPECT_TRUE(by_file["notes.txt"].at("id").is_null());
  EXPECT_FALSE(by_file["notes.txt"].at("problem").is_null());
  EXPECT_FALSE(by_file[bad_name].at("problem").is_null()) << "an invalid id cannot be booted";

  auto value = cli({"image", "list", "--server", a.url(), "-f", "value", "-c", "id", "-c", "BASE_CACHED"});
  EXPECT_NE(value.out.find("sample-a true\nsample-b false\n"), std::string::npos) << value.out;
  auto table = cli({"image", "list", "--server", a.url()});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("FORMAT"), std::string::npos);
  EXPECT_NE(table.out.find("repository: " + images), std::string::npos) << table.out;
}

// Fault injection: EIO from the listing of the image repository (strace -P:
// getdents64 on that directory only) is a 500 io_error naming it, and exit
// 1 from `image list` - never a list cut short.
TEST(AgentOps, ImageListReportsAFailedListing) {
  AgentWorld w;
  use_json_log(w);  // its lines carry the agent's own pid
  const std::string images = w.dir.sub("images");
  Agent a(w.config, {},
          {"strace", "-f", "-qq", "-E", testing::sanitizer_options(), "-o", "/dev/null", "-P", images, "-e",
           "trace=getdents64", "-e", "inject=getdents64:error=EIO"});
  ASSERT_TRUE(a.running()) << a.exit_output().err;
  // Signals go to the agent itself: strace detaches on SIGTERM or SIGKILL and
  // would leave the agent running.
  const auto first = nlohmann::json::parse(a.log().substr(0, a.log().find('\n')), nullptr, false);
  ASSERT_TRUE(first.is_object() && first.contains("pid")) << a.log();
  struct KillAgent {
    pid_t pid;
    bool stopped = false;
    ~KillAgent() {
      if (!stopped) ::kill(pid, SIGKILL);
    }
  } guard{first.at("pid").get<pid_t>()};
  auto r = a.client().call("GET", "/v1/images");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500) << r->raw;
  EXPECT_EQ(r->body["error"]["code"], "io_error") << r->raw;
  EXPECT_NE(r->raw.find("cannot list the image repository " + images + ": Input/output error"),
            std::string::npos)
      << r->raw;
  auto listed = cli({"image", "list", "--server", a.url()});
  EXPECT_EQ(listed.exit_code, 1) << listed.err;
  EXPECT_TRUE(listed.out.empty()) << listed.out;
  ASSERT_EQ(::kill(guard.pid, SIGTERM), 0);
  const auto out = a.stop(0);  // signal 0: nothing sent, strace ends with the agent
  guard.stopped = true;
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.err.find("agent stopped cleanly"), std::string::npos);
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
  // The removal's audit line (text format: in the message).
  EXPECT_NE(a.log().find("audit operation=image_cache_remove outcome=ok duration_ms="), std::string::npos)
      << a.log();
  EXPECT_NE(a.log().find("file=" + unused + " bytes=12345"), std::string::npos) << a.log();
  EXPECT_NE(t.find("\nvirtcap_image_cache_files_removed_total 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("\nvirtcap_image_cache_bytes_freed_total 12345\n"), std::string::npos) << t;
  EXPECT_TRUE(std::regex_search(t, std::regex("\nvirtcap_image_cache_passes_total [1-9]"))) << t;
  EXPECT_TRUE(std::regex_search(
      t, std::regex("virtcap_task_runs_total\\{task=\"image_cache_manager_pass\",result=\"ran\"\\} [1-9]")))
      << t;
  EXPECT_NE(t.find("virtcap_task_runs_total{task=\"image_cache_manager_pass\",result=\"failed\"} 0"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("virtcap_build_info{version=\""), std::string::npos) << t;
  EXPECT_NE(t.find("\nvirtcap_hypervisor_connected 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("virtcap_instances{vm_state=\"active\"} 1\n"), std::string::npos) << t;
}

}  // namespace
}  // namespace virtcap
