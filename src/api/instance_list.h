// GET /v1/instances: its query parameters (filters, sort, view, paging;
// docs/api.md "List instances"), and the response, rendered straight from
// the store's cursor into the body text.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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

// The whole response body of GET /v1/instances with these parameters:
// {"instances":[...],"next":"/v1/instances?...&marker=UUID" or null}.
Result<std::string> list_instances_body(compute::ComputeManager& mgr,
                                        const std::map<std::string, std::string>& params);

// One instance object (keys sorted, as dump_json writes them) appended to
// `out`; with `power_state`, its "power_state" key too (empty: null).
void append_instance_json(std::string& out, const InstanceRowView& r,
                          const std::optional<std::string_view>& power_state = std::nullopt);

}  // namespace virtcap::api
