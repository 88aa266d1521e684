// Fuzzes GET /v1/instances' query parameters (api/instance_list.h): any
// parameters give a query or a clean invalid_argument error naming one, never
// a crash or a hang (the name pattern is compiled and run by RE2); accepted
// values are in range; the next-link path is plain URL text; an instance
// named by the input renders as the generic JSON dump renders it.
// Input: NUL-separated "key=value" pairs.
#include <re2/re2.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "api/instance_list.h"
#include "api/json.h"
#include "common/json_text.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> params;
  for (std::size_t at = 0; at <= in.size();) {
    const std::size_t end = std::min(in.find('\0', at), in.size());
    const std::string pair = in.substr(at, end - at);
    const std::size_t eq = pair.find('=');
    params[pair.substr(0, eq)] = eq == std::string::npos ? "" : pair.substr(eq + 1);
    at = end + 1;
  }
  using virtcap::Errc;
  auto q = virtcap::api::parse_list_query(params);
  if (!q.ok()) {
    if (q.error().code != Errc::invalid_argument || q.error().message.empty()) std::abort();
  } else {
    if (q->page.limit < 1 || q->page.limit > virtcap::kMaxInstancePage) std::abort();
    if (q->page.marker.size() > 64) std::abort();
    if (q->name) (void)re2::RE2::PartialMatch(in, *q->name);  // linear: never a hang
  }
  const std::string path = virtcap::api::instances_path(params);
  if (path.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%?&=/") !=
      std::string::npos)
    std::abort();
  virtcap::InstanceRecord r;
  r.name = in;
  r.task_state = virtcap::kAllTaskStates[params.begin()->second.size() % std::size(virtcap::kAllTaskStates)];
  r.vm_state = virtcap::kAllVmStates[in.size() % std::size(virtcap::kAllVmStates)];
  std::string out;
  virtcap::api::append_instance_json(out, virtcap::row_view(r), params.begin()->first);
  auto j = virtcap::api::to_json(r);
  j["power_state"] =
      params.begin()->first.empty() ? nlohmann::json(nullptr) : nlohmann::json(params.begin()->first);
  if (out != virtcap::dump_json(j)) std::abort();
  return 0;
}
