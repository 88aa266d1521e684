// GET /v1/instances and `virtcap list` through a real agent (libvirt test
// driver, SQLite store): server-side filters, sort, the long view, deleted
// instances, Nova-style paging with next links, and parameters that must be
// refused (400, nothing changed) - hostile regular expressions included.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "api/instance_list.h"
#include "store/sqlite/sqlite_store.h"
#include "support/agent_process.h"
#include "support/store_seed.h"

namespace virtcap::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

proc::Output cli(std::vector<std::string> args) {
  args.insert(args.begin(), VIRTCAP_BINARY);
  auto r = proc::run(args, std::chrono::seconds(60));
  EXPECT_TRUE(r.ok());
  return r.ok() ? r.value() : proc::Output{};
}

std::string uuid_of(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

// The agent's store, filled before it starts. Instances in vm_state error
// or lost without a domain are left as they are by its start-up reconcile.
void seed(const AgentWorld& w, const std::vector<InstanceRecord>& records) {
  seed_store(w.dir.sub("virtcap.db"), records);
}

InstanceRecord record(int i, const std::string& name, const std::string& vm_state, int memory_mb = 64) {
  InstanceRecord r;
  r.uuid = uuid_of(i);
  r.name = name;
  r.host = "test-host";
  r.image_id = "sample-a";
  r.memory_mb = memory_mb;
  r.vcpus = 1 + i % 3;
  r.vm_state = vm_state_from_string(vm_state).value();
  r.created_at = 1000 + i;
  r.updated_at = 5000 - i;
  if (r.vm_state == VmState::deleted) r.deleted_at = 6000 + i;
  return r;
}

std::vector<std::string> names(const json& page) {
  std::vector<std::string> out;
  for (const auto& i : page.at("instances")) out.push_back(i.at("name").get<std::string>());
  return out;
}

std::set<std::string> name_set(const json& page) {
  auto v = names(page);
  return {v.begin(), v.end()};
}

// A world of instances in every state, two of them really booted (running).
class ListWorld : public ::testing::Test {
 protected:
  void SetUp() override {
    seed(w,
         {record(1, "db-1", "error", 128), record(2, "db-2", "lost", 256), record(3, "cache-1", "error", 32),
          record(4, "old-1", "deleted"), record(5, "old-2", "deleted"), record(6, "batch-7", "lost", 512)});
    agent.emplace(w.config);
    ASSERT_TRUE(agent->running()) << agent->exit_output().err;
    for (const char* n : {"web-1", "web-2"}) {
      const json body{{"name", n}, {"image", "sample-b"}, {"memory_mb", 1024}, {"vcpus", 2}};
      ASSERT_TRUE(client().request("POST", "/v1/instances", &body).ok());
    }
  }
  http::Client client() { return agent->client(); }
  json get(const std::string& query) {
    auto r = client().request("GET", "/v1/instances" + query);
    EXPECT_TRUE(r.ok()) << query << ": " << (r.ok() ? "" : r.error().message);
    return r.ok() ? r.value() : json{{"instances", json::array()}};
  }

  AgentWorld w;
  std::optional<Agent> agent;
};

using Names = std::set<std::string>;

TEST_F(ListWorld, StatusFilterIsServerSideAndDeletedOnlyWhenAsked) {
  EXPECT_EQ(name_set(get("")), (Names{"db-1", "db-2", "cache-1", "batch-7", "web-1", "web-2"}));
  EXPECT_EQ(name_set(get("?status=error")), (Names{"db-1", "cache-1"}));
  EXPECT_EQ(name_set(get("?status=lost")), (Names{"db-2", "batch-7"}));
  EXPECT_EQ(name_set(get("?status=active")), (Names{"web-1", "web-2"}));
  EXPECT_EQ(name_set(get("?status=deleted")), (Names{"old-1", "old-2"}));
  EXPECT_EQ(name_set(get("?deleted=true")).size(), 8u);
  EXPECT_EQ(name_set(get("?deleted=false")).size(), 6u);
  auto gone = get("?deleted=true&status=deleted");
  for (const auto& i : gone.at("instances")) EXPECT_TRUE(i.at("deleted_at").is_number()) << i;
  EXPECT_TRUE(get("").at("next").is_null());
}

// Pages are reused while the store stands still (docs/api.md); any change -
// the agent's own write, or a commit to its database by another process - is
// in the very next answer, on a plain list and on a filtered one alike.
TEST_F(ListWorld, AReusedPageNeverOutlivesAChangeToTheStore) {
  const Names live{"db-1", "db-2", "cache-1", "batch-7", "web-1", "web-2"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(name_set(get("")), live);
    EXPECT_EQ(name_set(get("?status=error")), (Names{"db-1", "cache-1"}));
  }
  const json body{{"name", "web-3"}, {"image", "sample-b"}, {"memory_mb", 64}, {"vcpus", 1}};
  auto booted = client().request("POST", "/v1/instances", &body);
  ASSERT_TRUE(booted.ok()) << booted.error().message;
  Names with_web3 = live;
  with_web3.insert("web-3");
  EXPECT_EQ(name_set(get("")), with_web3) << "the agent's own write";
  ASSERT_TRUE(client().request("DELETE", "/v1/instances/" + booted->at("uuid").get<std::string>()).ok());
  EXPECT_EQ(name_set(get("")), live) << "a delete";

  // Another process commits to the agent's database.
  {
    auto other = store::SqliteStore::open(w.dir.sub("virtcap.db"));
    ASSERT_TRUE(other.ok()) << other.error().message;
    auto r = other.value()->get_instance(uuid_of(1));
    ASSERT_TRUE(r.ok()) << r.error().message;
    r->name = "db-9";
    ASSERT_TRUE(other.value()->update_instance(*r).ok());
  }
  EXPECT_EQ(name_set(get("?status=error")), (Names{"db-9", "cache-1"})) << "another connection's commit";
  EXPECT_TRUE(name_set(get("")).count("db-9"));
}

TEST_F(ListWorld, PowerStateComesFromTheHypervisor) {
  EXPECT_EQ(name_set(get("?power_state=running")), (Names{"web-1", "web-2"}));
  EXPECT_EQ(name_set(get("?power_state=nostate")), (Names{"db-1", "db-2", "cache-1", "batch-7"}))
      << "instances the hypervisor does not know count as nostate";
  EXPECT_TRUE(get("?power_state=paused").at("instances").empty());
  EXPECT_EQ(name_set(get("?power_state=running&status=error")), Names{});
  // Named: a range-for over get(...).at(...) would iterate a destroyed temporary.
  const json plain = get(""), long_view = get("?long=true");
  for (const auto& i : plain.at("instances"))
    EXPECT_FALSE(i.contains("power_state")) << "only in the long view";
  for (const auto& i : long_view.at("instances")) {
    ASSERT_TRUE(i.contains("power_state")) << i;
    if (i.at("name").get<std::string>().starts_with("web-")) {
      EXPECT_EQ(i.at("power_state"), "running");
    } else {
      EXPECT_TRUE(i.at("power_state").is_null()) << i;
    }
  }
}

TEST_F(ListWorld, NameRegexAndSortAreServerSide) {
  EXPECT_EQ(name_set(get("?name=%5Edb-")), (Names{"db-1", "db-2"}));
  EXPECT_EQ(name_set(get("?name=-%5B12%5D%24")), (Names{"db-1", "db-2", "cache-1", "web-1", "web-2"}));
  EXPECT_EQ(name_set(get("?name=b")), (Names{"db-1", "db-2", "batch-7", "web-1", "web-2"}))
      << "unanchored search";
  EXPECT_EQ(name_set(get("?name=%5Eold&deleted=true")), (Names{"old-1", "old-2"}));
  EXPECT_EQ(names(get("?sort_key=name")),
            (std::vector<std::string>{"batch-7", "cache-1", "db-1", "db-2", "web-1", "web-2"}));
  EXPECT_EQ(names(get("?sort_key=name&sort_dir=desc")),
            (std::vector<std::string>{"web-2", "web-1", "db-2", "db-1", "cache-1", "batch-7"}));
  EXPECT_EQ(names(get("?sort_key=memory_mb&sort_dir=desc&status=lost")),
            (std::vector<std::string>{"batch-7", "db-2"}));
  // Default: created_at ascending (the seeded ones are older than the booted,
  // which may share a second: then their random uuids order them).
  auto by_age = names(get(""));
  ASSERT_EQ(by_age.size(), 6u);
  EXPECT_EQ(std::vector<std::string>(by_age.begin(), by_age.begin() + 4),
            (std::vector<std::string>{"db-1", "db-2", "cache-1", "batch-7"}));
  EXPECT_EQ(names(get("?sort_key=updated_at&status=error")), (std::vector<std::string>{"cache-1", "db-1"}));
  // Paging in a sorted order: pages of 2 by name, descending, concatenate.
  std::vector<std::string> paged;
  for (std::string q = "?sort_key=name&sort_dir=desc&limit=2";;) {
    auto page = get(q);
    for (auto& n : names(page)) paged.push_back(n);
    if (page.at("next").is_null()) break;
    q = page.at("next").get<std::string>().substr(std::string("/v1/instances").size());
  }
  EXPECT_EQ(paged, (std::vector<std::string>{"web-2", "web-1", "db-2", "db-1", "cache-1", "batch-7"}));
}

TEST_F(ListWorld, BadParametersAre400NamingTheParameterAndChangeNothing) {
  const auto before = client().call("GET", "/v1/instances?deleted=true&long=true");
  ASSERT_TRUE(before.ok());
  const std::pair<std::string, std::string> bad[] = {
      {"status=running", "'status'"},
      {"power_state=on", "'power_state'"},
      {"name=%28unclosed", "'name'"},
      {"sort_key=host", "'sort_key'"},
      {"sort_key=name%3B%20DROP%20TABLE%20instances", "'sort_key'"},
      {"sort_dir=sideways", "'sort_dir'"},
      {"long=maybe", "'long'"},
      {"deleted=2", "'deleted'"},
      {"limit=0", "'limit'"},
      {"limit=1001", "'limit'"},
      {"limit=-5", "'limit'"},
      {"limit=ten", "'limit'"},
      {"marker=no-such-instance", "marker 'no-such-instance'"},
      {"marker=" + std::string(100, 'f'), "'marker'"},
      {"flavor=m1", "unknown query parameter 'flavor'"},
  };
  for (const auto& [query, want] : bad) {
    auto r = client().call("GET", "/v1/instances?" + query);
    ASSERT_TRUE(r.ok()) << query;
    EXPECT_EQ(r->status, 400) << query << ": " << r->raw;
    EXPECT_EQ(r->body["error"]["code"], "invalid_argument") << r->raw;
    EXPECT_NE(r->body["error"]["message"].get<std::string>().find(want), std::string::npos) << r->raw;
  }
  const auto after = client().call("GET", "/v1/instances?deleted=true&long=true");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->raw, before->raw) << "refused requests changed nothing";
}

// RE2 matches in time linear in the name, whatever the pattern: patterns
// that make backtracking engines take exponential time, or recurse deeply,
// answer at once; oversized ones are refused before compiling.
TEST(InstanceList, HostileNamePatternsAnswerPromptlyAndNeverHurtTheAgent) {
  AgentWorld w;
  std::vector<InstanceRecord> rs;
  for (int i = 0; i < 50; ++i) rs.push_back(record(i, std::string(4000, 'a') + std::to_string(i), "error"));
  seed(w, rs);
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();
  struct Case {
    std::string pattern;
    std::set<int> statuses;
  };
  const Case cases[] = {
      {"(a*)*b", {200}},
      {"(a|aa)*c", {200}},
      {"^(a+)+$", {200}},
      {"(x+x+)+y", {200}},
      {std::string(500, '(') + "b" + std::string(500, ')'), {200, 400}},
      {"((((((a{100}){100}){100}){100}){100}){100})", {400}},
      {"(a)\\1", {400}},  // backreferences: not RE2, refused
      {"(?=a)", {400}},   // lookahead: not RE2, refused
      {std::string(1025, 'a'), {400}},
      {std::string(100 * 1024, 'a'), {400, 414}},  // the server may refuse the request line first
  };
  for (const auto& k : cases) {
    const auto start = Clock::now();
    auto r = c.call("GET", api::instances_path({{"name", k.pattern}}));
    const auto took = Clock::now() - start;
    ASSERT_TRUE(r.ok()) << k.pattern.substr(0, 60) << ": " << r.error().message;
    EXPECT_TRUE(k.statuses.count(r->status))
        << k.pattern.substr(0, 60) << " -> " << r->status << " " << r->raw.substr(0, 300);
    EXPECT_LT(took, std::chrono::seconds(5)) << k.pattern.substr(0, 60);
    if (r->status == 200) {
      EXPECT_TRUE(r->body["instances"].empty()) << k.pattern.substr(0, 60);
    }
  }
  auto all = c.call("GET", "/v1/instances?name=%5Ea%2B0%24");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->body["instances"].size(), 1u) << "a matching pattern still matches a 4,000-byte name";
  EXPECT_EQ(c.call("GET", "/healthz")->status, 200);
  EXPECT_TRUE(agent.running());
}

// 2,500 instances, no limit: pages of 1,000 and a next link; following the
// links gives each instance once. An instance deleted between pages (one
// already seen: the marker itself) moves nothing.
TEST(InstanceList, DefaultPagesOf1000FollowNextLinksStablyAcrossADelete) {
  AgentWorld w;
  std::vector<InstanceRecord> rs;
  for (int i = 0; i < 2500; ++i) rs.push_back(record(i, "vm-" + std::to_string(i), i % 2 ? "error" : "lost"));
  seed(w, rs);
  Agent agent(w.config);
  ASSERT_TRUE(agent.running()) << agent.exit_output().err;
  auto c = agent.client();
  std::vector<std::string> seen;
  std::string path = "/v1/instances";
  int pages = 0;
  for (; pages < 10; ++pages) {
    auto page = c.request("GET", path);
    ASSERT_TRUE(page.ok()) << page.error().message;
    for (const auto& i : page->at("instances")) seen.push_back(i.at("uuid").get<std::string>());
    if (page->at("next").is_null()) break;
    EXPECT_EQ(page->at("instances").size(), 1000u) << "a page before the last is full";
    path = page->at("next").get<std::string>();
    EXPECT_EQ(path, "/v1/instances?marker=" + seen.back()) << "the documented link format";
    if (pages == 0) {
      ASSERT_TRUE(c.request("DELETE", "/v1/instances/" + seen.back()).ok());
    }
  }
  EXPECT_EQ(pages + 1, 3);
  ASSERT_EQ(seen.size(), 2500u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 2500u) << "no duplicates";
  for (int i = 0; i < 2500; ++i)
    ASSERT_EQ(seen[static_cast<std::size_t>(i)], uuid_of(i)) << "none missing, in order";
  // Filters are kept in the next link.
  auto first = c.request("GET", "/v1/instances?status=lost&limit=600");
  ASSERT_TRUE(first.ok());
  const std::string next = first->at("next").get<std::string>();
  EXPECT_EQ(next, "/v1/instances?limit=600&marker=" + uuid_of(1198) + "&status=lost");
  auto second = c.request("GET", next);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->at("instances").size(), 600u);
  EXPECT_EQ(second->at("instances").back().at("uuid"), uuid_of(2398));

  // The CLI follows the links: every instance (but the deleted one) by default.
  auto all = cli({"list", "--server", agent.url(), "-f", "value", "-c", "uuid"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(std::count(all.out.begin(), all.out.end(), '\n'), 2499);
  auto one = cli({"list", "--server", agent.url(), "--limit", "3", "--marker", uuid_of(10), "-f", "value",
                  "-c", "uuid"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, uuid_of(11) + "\n" + uuid_of(12) + "\n" + uuid_of(13) + "\n");
  EXPECT_NE(one.err.find("more instances follow: --marker " + uuid_of(13)), std::string::npos) << one.err;
}

TEST_F(ListWorld, CliOptionsMapToTheQueryAndBadOnesExit2NamingTheFlag) {
  const std::string url = agent->url();
  auto errors = cli({"list", "--server", url, "--status", "error", "--sort-column", "name", "--sort-dir",
                     "desc", "-f", "value", "-c", "name"});
  ASSERT_EQ(errors.exit_code, 0) << errors.err;
  EXPECT_EQ(errors.out, "db-1\ncache-1\n");
  auto named = cli({"list", "--server", url, "--name", "^web-", "--power-state", "running", "--sort-column",
                    "name", "-f", "value", "-c", "name"});
  EXPECT_EQ(named.out, "web-1\nweb-2\n") << named.err;
  auto long_table = cli({"list", "--server", url, "--long", "--name", "web-1"});
  ASSERT_EQ(long_table.exit_code, 0) << long_table.err;
  EXPECT_NE(long_table.out.find("POWER"), std::string::npos) << long_table.out;
  EXPECT_NE(long_table.out.find("MEMORY(MiB)"), std::string::npos) << long_table.out;
  EXPECT_NE(long_table.out.find("running"), std::string::npos) << long_table.out;
  auto long_values = cli({"list", "--server", url, "-l", "--name", "web-1", "-f", "value", "-c", "POWER",
                          "-c", "memory_mb", "-c", "VCPUS"});
  EXPECT_EQ(long_values.out, "running 1024 2\n") << long_values.err;
  auto deleted =
      cli({"list", "--server", url, "--deleted", "--status", "deleted", "-f", "value", "-c", "name"});
  EXPECT_EQ(deleted.out, "old-1\nold-2\n") << deleted.err;
  auto with_deleted = cli({"list", "--server", url, "--deleted"});
  EXPECT_NE(with_deleted.out.find("DELETED"), std::string::npos) << with_deleted.out;
  const std::pair<std::vector<std::string>, std::string> bad[] = {
      {{"--status", "running"}, "--status"}, {{"--power-state", "on"}, "--power-state"},
      {{"--name", "(x"}, "--name"},          {{"--sort-column", "host"}, "--sort-column"},
      {{"--sort-dir", "up"}, "--sort-dir"},  {{"--limit", "0"}, "--limit"},
      {{"--marker", "nosuch"}, "--marker"},
  };
  for (const auto& [args, flag] : bad) {
    std::vector<std::string> argv = {"list", "--server", url};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = cli(argv);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace virtcap::testing
