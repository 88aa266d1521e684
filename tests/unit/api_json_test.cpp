#include <gtest/gtest.h>

#include <cstdint>

#include "api/instance_list.h"
#include "api/json.h"
#include "common/json_text.h"
#include "http/errors.h"

namespace virtcap::api {
namespace {

TEST(ApiJson, HandWrittenInstanceObjectsEqualTheGenericRendering) {
  std::vector<InstanceRecord> list(4);
  list[0].uuid = "u-1";
  list[0].name = "web \"quoted\" \\ back \x7f caf\xc3\xa9";
  list[0].host = "h";
  list[0].image_id = "img\n\t\x01\x1f\b\f\r";
  list[0].task_state = TaskState::spawning;
  list[1].uuid = "u-2";
  list[1].deleted_at = 42;
  list[1].created_at = -5;
  list[2].name = "bad utf-8 \xff\xc3(";  // replaced as dump_json replaces it
  list[3].memory_mb = 16 * 1024 * 1024;
  list[3].updated_at = INT64_MAX;
  for (const auto& r : list) {
    std::string out;
    append_instance_json(out, row_view(r));
    EXPECT_EQ(out, dump_json(to_json(r)));
    // The long view adds power_state (null when the hypervisor has none).
    for (std::string_view ps : {"running", ""}) {
      auto j = to_json(r);
      j["power_state"] = ps.empty() ? nlohmann::json(nullptr) : nlohmann::json(ps);
      std::string with;
      append_instance_json(with, row_view(r), ps);
      EXPECT_EQ(with, dump_json(j));
    }
  }
}

// The word-at-a-time scan for plain bytes must stop at every byte that needs
// escaping or a UTF-8 check, wherever it sits in the word.
TEST(ApiJson, RandomNamesRenderAsTheGenericDump) {
  const std::string alphabet =
      std::string("abcXYZ09 -_.~\"\\\x01\x1f\x7f\n\t") + "\xc3\xa9\xe2\x82\xac\xff\x80";
  std::uint32_t seed = 7;
  auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
  for (int n = 0; n < 5000; ++n) {
    InstanceRecord r;
    const std::size_t len = next() % 41;
    for (std::size_t i = 0; i < len; ++i) r.name += alphabet[next() % alphabet.size()];
    std::string out;
    append_instance_json(out, row_view(r));
    ASSERT_EQ(out, dump_json(to_json(r))) << n;
  }
}

TEST(ApiJson, StatesBecomeTheirNamesAndBack) {
  for (VmState v : kAllVmStates) {
    EXPECT_EQ(vm_state_from_string(to_string(v)), v);
    InstanceRecord r;
    r.vm_state = v;
    EXPECT_EQ(to_json(r)["vm_state"], std::string(to_string(v)));
    auto q = parse_list_query({{"status", std::string(to_string(v))}});
    ASSERT_TRUE(q.ok()) << q.error().message;
    EXPECT_EQ(q->page.vm_state, v);
  }
  for (TaskState t : kAllTaskStates) EXPECT_EQ(task_state_from_string(to_string(t)), t);
  InstanceRecord idle;
  EXPECT_TRUE(to_json(idle)["task_state"].is_null());
  idle.task_state = TaskState::deleting;
  EXPECT_EQ(to_json(idle)["task_state"], "deleting");
  EXPECT_FALSE(vm_state_from_string("rebooting").has_value());
  EXPECT_FALSE(task_state_from_string("rebooting").has_value());
  auto bad = parse_list_query({{"status", "rebooting"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "parameter 'status' must be one of building, active, error, lost, deleted, not 'rebooting'");
}

TEST(ApiJson, ListQueryParametersAreValidatedByName) {
  EXPECT_TRUE(parse_list_query({}).ok());
  auto ok = parse_list_query({{"status", "deleted"},
                              {"sort_key", "name"},
                              {"sort_dir", "desc"},
                              {"limit", "7"},
                              {"long", "true"},
                              {"power_state", "paused"},
                              {"name", "^web-[0-9]+$"}});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->page.vm_state, VmState::deleted);
  EXPECT_TRUE(ok->page.include_deleted) << "status=deleted lists deleted instances";
  EXPECT_EQ(ok->page.sort_key, InstanceSortKey::name);
  EXPECT_TRUE(ok->page.descending);
  EXPECT_EQ(ok->page.limit, 7u);
  EXPECT_TRUE(ok->long_view);
  EXPECT_EQ(ok->power_state, PowerState::paused);
  EXPECT_NE(ok->name, nullptr);
  const std::pair<std::map<std::string, std::string>, std::string> bad[] = {
      {{{"status", "running"}}, "parameter 'status'"},
      {{{"power_state", "on"}}, "parameter 'power_state'"},
      {{{"name", "(unclosed"}}, "parameter 'name'"},
      {{{"name", std::string(kMaxNamePatternBytes + 1, 'a')}}, "parameter 'name'"},
      {{{"name", "((((((((((a{1000}){1000}){1000}){1000})))))))"}}, "parameter 'name'"},
      {{{"sort_key", "host"}}, "parameter 'sort_key'"},
      {{{"sort_key", "name; DROP TABLE instances"}}, "parameter 'sort_key'"},
      {{{"sort_dir", "up"}}, "parameter 'sort_dir'"},
      {{{"long", "yes"}}, "parameter 'long'"},
      {{{"deleted", ""}}, "parameter 'deleted'"},
      {{{"limit", "0"}}, "parameter 'limit'"},
      {{{"limit", "1001"}}, "parameter 'limit'"},
      {{{"limit", "-1"}}, "parameter 'limit'"},
      {{{"limit", "99999999999999999999999"}}, "parameter 'limit'"},
      {{{"limit", "5x"}}, "parameter 'limit'"},
      {{{"marker", ""}}, "parameter 'marker'"},
      {{{"marker", std::string(65, 'a')}}, "parameter 'marker'"},
      {{{"flavor", "x"}}, "unknown query parameter 'flavor'"},
  };
  for (const auto& [params, want] : bad) {
    auto r = parse_list_query(params);
    ASSERT_FALSE(r.ok()) << params.begin()->second;
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find(want), std::string::npos) << r.error().message;
  }
}

TEST(ApiJson, InstancesPathPercentEncodesEveryValue) {
  EXPECT_EQ(instances_path({}), "/v1/instances");
  EXPECT_EQ(instances_path({{"name", "a&b=c d/%+"}, {"limit", "5"}}),
            "/v1/instances?limit=5&name=a%26b%3Dc%20d%2F%25%2B");
}

TEST(ApiJson, RequestBodiesAreValidatedFieldByField) {
  auto ok = parse_boot_request(R"({"name":"a","image":"b","vcpus":2})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->memory_mb, 512);
  EXPECT_EQ(ok->vcpus, 2);
  EXPECT_NE(parse_boot_request(R"({"name":"a"})").error().message.find("'image' is required"),
            std::string::npos);
  EXPECT_NE(parse_boot_request(R"({"name":"a","image":"b","memory_mb":8})").error().message.find("memory_mb"),
            std::string::npos);
  EXPECT_NE(parse_boot_request(R"({"name":"a","image":"b","x":1})").error().message.find("unknown field 'x'"),
            std::string::npos);
  EXPECT_FALSE(parse_interface_request(R"({"mac":"zz"})").ok());
  EXPECT_EQ(parse_interface_request(R"({"mac":"52:54:00:aB:Cd:eF"})")->mac, "52:54:00:aB:Cd:eF");
  for (const char* bad : {"52:54:00:ab:cd:e", "52:54:00:ab:cd:eff", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:eg",
                          "52:54:00:ab:cd:ef\\n", ":52:54:00:ab:cd:e"})
    EXPECT_FALSE(parse_interface_request(std::string(R"({"mac":")") + bad + "\"}").ok()) << bad;
  EXPECT_TRUE(parse_interface_request("").ok());
  EXPECT_EQ(parse_pass_request(R"({"dry_run":true})").value().dry_run, true);
  EXPECT_FALSE(parse_pass_request(R"({"dry_run":1})").ok());
  EXPECT_FALSE(parse_empty_request(R"({"force":true})").ok());
  EXPECT_EQ(http::http_status(Errc::capability_not_supported), 409);
  EXPECT_EQ(http::http_status(Errc::hypervisor_unavailable), 503);
}

// The rendered-page cache: a page comes back only for its own parameters at
// the version it was rendered at; it holds a bounded number of bounded pages.
TEST(ListPageCache, APageIsReusedOnlyAtItsVersionAndTheCacheIsBounded) {
  ListPageCache cache;
  auto body = [](std::string text) { return std::make_shared<const std::string>(std::move(text)); };
  const ContentsVersion v1{1, 7}, v2{2, 7}, v1_other{1, 8};
  cache.keep("k", v1, body("page"));
  ASSERT_NE(cache.find("k", v1), nullptr);
  EXPECT_EQ(*cache.find("k", v1), "page");
  EXPECT_EQ(cache.find("k", v2), nullptr) << "this store wrote since";
  EXPECT_EQ(cache.find("k", v1_other), nullptr) << "another connection committed since";
  EXPECT_EQ(cache.find("other", v1), nullptr);
  cache.keep("k", v2, body("page 2"));
  EXPECT_EQ(cache.find("k", v1), nullptr) << "a key holds one page, the newest";
  EXPECT_EQ(*cache.find("k", v2), "page 2");

  // Oversized pages are not kept.
  cache.keep("big", v1, body(std::string(ListPageCache::kMaxBodyBytes + 1, 'x')));
  EXPECT_EQ(cache.find("big", v1), nullptr);
  // At most kEntries pages; the least recently used makes room.
  for (std::size_t i = 0; i < ListPageCache::kEntries; ++i) {
    EXPECT_NE(cache.find("k", v2), nullptr);  // "k" stays in use
    cache.keep("p" + std::to_string(i), v1, body("x"));
  }
  EXPECT_NE(cache.find("k", v2), nullptr);
  EXPECT_EQ(cache.find("p0", v1), nullptr) << "the least recently used went";
  std::size_t kept = 0;
  for (std::size_t i = 0; i < ListPageCache::kEntries; ++i)
    kept += cache.find("p" + std::to_string(i), v1) != nullptr;
  EXPECT_EQ(kept + 1, ListPageCache::kEntries);
}

}  // namespace
}  // namespace virtcap::api
