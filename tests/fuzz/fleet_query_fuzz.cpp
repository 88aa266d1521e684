// Fuzzes what the fleet service parses from the network: the query string
// of GET /v1/hosts (parse_query), agent report bodies (parse_report_body) and
// trait-write generations (parse_generation). The first byte picks the
// parser. Any bytes must give a value or a clean invalid_argument, never a
// crash; what parse_query accepts must hold its documented invariants.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fleet/query.h"
#include "fleet/wire.h"

namespace {

using namespace virtcap;
using namespace virtcap::fleet;

// "a=b&c=d" -> {{"a","b"},{"c","d"}} (the bytes are taken as already decoded).
QueryParams split(const std::string& s) {
  QueryParams out;
  std::size_t at = 0;
  while (at <= s.size()) {
    const auto amp = std::min(s.find('&', at), s.size());
    const std::string kv = s.substr(at, amp - at);
    const auto eq = kv.find('=');
    out.emplace_back(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
    at = amp + 1;
  }
  return out;
}

bool sorted_unique(const std::vector<std::string>& v) {
  return std::adjacent_find(v.begin(), v.end(), std::greater_equal<>()) == v.end();
}

void check_query(const std::string& text) {
  auto q = parse_query(split(text));
  if (!q.ok()) {
    if (q.error().code != Errc::invalid_argument || q.error().message.empty()) std::abort();
    return;
  }
  if (!sorted_unique(q->required) || !sorted_unique(q->forbidden)) std::abort();
  for (const auto& t : q->required)
    if (std::binary_search(q->forbidden.begin(), q->forbidden.end(), t) || !check_trait_name(t).ok())
      std::abort();
  for (const auto& g : q->any_of)
    if (g.empty() || !sorted_unique(g)) std::abort();
  if (q->limit < 1 || q->limit > kMaxLimit) std::abort();
  for (const auto& r : q->resources)
    if (r && *r < 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: check_query(text); break;
    case 1: {
      auto r = parse_report_body("fuzz-host", text);
      if (!r.ok() && r.error().code != Errc::invalid_argument) std::abort();
      if (r.ok() && !check_report(r->report).ok()) std::abort();
      break;
    }
    default: {
      const auto cut = text.find('\n');
      auto g = parse_generation(text.substr(0, cut), cut == std::string::npos ? "" : text.substr(cut + 1));
      if (!g.ok() && g.error().code != Errc::invalid_argument) std::abort();
      if (g.ok() && *g && **g < 0) std::abort();
    }
  }
  return 0;
}
