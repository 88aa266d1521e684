// GET /v1/instances: the query parsed (instance_list.cpp), then one page
// rendered from the store's cursor straight into the body.
#include <re2/re2.h>

#include "api/instance_list.h"
#include "common/json_text.h"

namespace virtcap::api {

Result<std::string> list_instances_body(compute::ComputeManager& mgr,
                                        const std::map<std::string, std::string>& params) {
  auto q = parse_list_query(params);
  if (!q) return q.error();
  // Power states come from the hypervisor, asked once per request and only
  // when wanted. Without it, a long list shows null; a power_state filter fails.
  std::optional<std::map<std::string, PowerState, std::less<>>> powers;
  if (q->long_view || q->power_state) {
    auto p = mgr.power_states();
    if (p) powers = std::move(p.value());
    else if (q->power_state) return p.error();
  }
  auto power_of = [&](std::string_view uuid) -> std::optional<PowerState> {
    if (!powers) return std::nullopt;
    auto it = powers->find(uuid);
    return it == powers->end() ? std::nullopt : std::optional<PowerState>(it->second);
  };
  if (q->power_state || q->name)
    q->page.accept = [&](const InstanceRowView& r) {
      if (q->power_state && power_of(r.uuid).value_or(PowerState::nostate) != *q->power_state) return false;
      return !q->name || re2::RE2::PartialMatch(re2::StringPiece(r.name.data(), r.name.size()), *q->name);
    };
  std::string out;
  out.reserve(256 * q->page.limit + 256);
  out += "{\"instances\":[";
  auto info = mgr.list_page(q->page, [&](const InstanceRowView& r) {
    if (out.back() != '[') out += ',';
    if (!q->long_view) return append_instance_json(out, r);
    const auto ps = power_of(r.uuid);
    append_instance_json(out, r, ps ? to_string(*ps) : std::string_view());
  });
  if (!info) return info.error();
  out += "],\"next\":";
  if (info->more) {
    auto next = params;
    next["marker"] = info->next_marker;
    ((out += '"') += instances_path(next)) += '"';  // percent-encoded: nothing to escape
  } else {
    out += "null";
  }
  out += "}\n";
  return out;
}

}  // namespace virtcap::api
