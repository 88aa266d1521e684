// GET /v1/instances: its query parameters (filters, sort, view, paging;
// docs/api.md "List instances"), and the response, rendered straight from
// the store's cursor into the body text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "compute/manager.h"
#include "virtcap/driver.h"
#include "virtcap/store.h"

namespace re2 {
class RE2;
}

namespace virtcap::api {

// The longest `name` pattern accepted, in bytes.
inline constexpr std::size_t kMaxNamePatternBytes = 1024;

struct ListQuery {
  InstancePageQuery page;  // host left empty: the manager's own
  bool long_view = false;  // adds power_state
  std::optional<PowerState> power_state;
  std::shared_ptr<const re2::RE2> name;  // RE2 syntax, unanchored search
};

// The parameters of one request; invalid_argument naming the parameter for
// an unknown one or a bad value.
Result<ListQuery> parse_list_query(const std::map<std::string, std::string>& params);

// "/v1/instances" with `params` as its query (sorted, percent-encoded).
std::string instances_path(const std::map<std::string, std::string>& params);

// Rendered list pages, reused while the store's contents stay as they were.
// A page is kept with the store's ContentsVersion taken before it was read,
// and served again only while the version is unchanged: the agent's own
// writes and commits by any other connection both move it. Pages that depend
// on the hypervisor (long, power_state) are never kept. At most kEntries
// pages of at most kMaxBodyBytes each: a bounded few MiB.
class ListPageCache {
 public:
  static constexpr std::size_t kEntries = 8;
  static constexpr std::size_t kMaxBodyBytes = 1 << 20;
  using Body = std::shared_ptr<const std::string>;

  // The page kept for `key` if it was rendered at `version`.
  Body find(const std::string& key, const ContentsVersion& version);
  void keep(std::string key, const ContentsVersion& version, Body body);

 private:
  struct Entry {
    std::string key;
    ContentsVersion version;
    Body body;
    std::uint64_t used = 0;
  };
  Mutex mu_;
  std::vector<Entry> entries_ GUARDED_BY(mu_);
  std::uint64_t clock_ GUARDED_BY(mu_) = 0;
};

// The whole response body of GET /v1/instances with these parameters:
// {"instances":[...],"next":"/v1/instances?...&marker=UUID" or null}.
// With a cache, a page the store has not changed under is not rendered again.
Result<ListPageCache::Body> list_instances_body(compute::ComputeManager& mgr,
                                                const std::map<std::string, std::string>& params,
                                                ListPageCache* cache = nullptr);

// One instance object (keys sorted, as dump_json writes them) appended to
// `out`; with `power_state`, its "power_state" key too (empty: null).
void append_instance_json(std::string& out, const InstanceRowView& r,
                          const std::optional<std::string_view>& power_state = std::nullopt);

}  // namespace virtcap::api
