#include "api/instance_list.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "common/json_text.h"
#include "common/strings.h"
#include "common/utf8.h"
#include "http/server.h"

namespace virtcap::api {

namespace {

constexpr std::array<PowerState, 6> kPowerStates = {PowerState::nostate, PowerState::running,
                                                    PowerState::paused,  PowerState::shutdown,
                                                    PowerState::crashed, PowerState::suspended};
constexpr std::array<std::string_view, 9> kParams = {"status", "power_state", "name",  "sort_key", "sort_dir",
                                                     "long",   "deleted",     "limit", "marker"};
// Past this, a compiled pattern is refused ("pattern too large"): RE2 bounds
// its memory by it, and matching is linear in the name whatever the pattern.
constexpr std::int64_t kRegexMemoryBytes = 2 * 1024 * 1024;
// A marker is an instance uuid; anything longer is not one.
constexpr std::size_t kMaxMarkerBytes = 64;

Error bad_param(std::string_view param, const std::string& what) {
  return invalid_argument_error("parameter '" + std::string(param) + "' " + what);
}

// A true/false parameter's value.
struct Flag {
  bool on = false;
};
Result<Flag> parse_flag(std::string_view param, const std::string& v) {
  if (v == "true" || v == "1") return Flag{true};
  if (v == "false" || v == "0") return Flag{false};
  return bad_param(param, "must be true or false, not '" + v + "'");
}

Result<std::shared_ptr<const re2::RE2>> parse_name_pattern(const std::string& v) {
  if (v.size() > kMaxNamePatternBytes)
    return bad_param("name", "is a pattern of " + std::to_string(v.size()) + " bytes; at most " +
                                 std::to_string(kMaxNamePatternBytes) + " are accepted");
  re2::RE2::Options o;
  o.set_log_errors(false);
  o.set_max_mem(kRegexMemoryBytes);
  auto re = std::make_shared<const re2::RE2>(v, o);
  if (!re->ok()) return bad_param("name", "is not a valid regular expression (RE2 syntax): " + re->error());
  return std::shared_ptr<const re2::RE2>(std::move(re));
}

// Sets one parameter of `q`; invalid_argument naming it on a bad value.
Status apply_param(ListQuery& q, const std::string& k, const std::string& v) {
  if (k == "status") {
    q.page.vm_state = vm_state_from_string(v);
    if (!q.page.vm_state) {
      std::vector<std::string_view> names;
      for (VmState s : kAllVmStates) names.push_back(to_string(s));
      return bad_param(k, "must be one of " + join(names) + ", not '" + v + "'");
    }
  } else if (k == "power_state") {
    for (PowerState s : kPowerStates)
      if (to_string(s) == v) q.power_state = s;
    if (!q.power_state) {
      std::vector<std::string_view> names;
      for (PowerState s : kPowerStates) names.push_back(to_string(s));
      return bad_param(k, "must be one of " + join(names) + ", not '" + v + "'");
    }
  } else if (k == "name") {
    if (v.empty()) return {};
    auto re = parse_name_pattern(v);
    if (!re.ok()) return re.error();
    q.name = std::move(re.value());
  } else if (k == "sort_key") {
    const auto key = parse_sort_key(v);
    if (!key) return bad_param(k, "must be one of " + sort_key_names() + ", not '" + v + "'");
    q.page.sort_key = *key;
  } else if (k == "sort_dir") {
    if (v != "asc" && v != "desc") return bad_param(k, "must be asc or desc, not '" + v + "'");
    q.page.descending = v == "desc";
  } else if (k == "long" || k == "deleted") {
    auto b = parse_flag(k, v);
    if (!b.ok()) return b.error();
    (k == "long" ? q.long_view : q.page.include_deleted) = b->on;
  } else if (k == "limit") {
    std::size_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < 1 || n > kMaxInstancePage)
      return bad_param(
          k, "must be a whole number from 1 to " + std::to_string(kMaxInstancePage) + ", not '" + v + "'");
    q.page.limit = n;
  } else if (k == "marker") {
    if (v.empty() || v.size() > kMaxMarkerBytes)
      return bad_param(k, "must be the uuid of the last instance of the previous page");
    q.page.marker = v;
  } else {
    return make_error(Errc::invalid_argument,
                      "unknown query parameter '" + k + "'; GET /v1/instances takes " + join(kParams));
  }
  return {};
}

// Whether the 8 bytes at p are all printable ASCII other than '"' and '\\'
// (nothing to escape or check), tested a word at a time: a byte below 0x20,
// a byte equal to '"' or '\\' (zero after xor), or a high bit.
bool plain8(const char* p) {
  std::uint64_t x;
  std::memcpy(&x, p, sizeof x);
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  auto has_zero = [&](std::uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  const std::uint64_t below_space = (x - kOnes * 0x20) & ~x & kHigh;
  return (below_space | has_zero(x ^ (kOnes * '"')) | has_zero(x ^ (kOnes * '\\')) | (x & kHigh)) == 0;
}

// `s` as a JSON string: runs of plain bytes appended whole, the rest escaped
// as nlohmann's dump() escapes them; text that is not valid UTF-8 goes
// through dump_json (each invalid sequence replaced by U+FFFD).
void put_string(std::string& out, std::string_view s) {
  const std::size_t start = out.size();
  out += '"';
  bool checked_utf8 = false;
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    while (i + 8 <= s.size() && plain8(s.data() + i)) i += 8;
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80 && !checked_utf8) {
      checked_utf8 = true;
      if (!is_valid_utf8(s)) {  // rare: the generic dump, replacing as every other response does
        out.resize(start);
        out += dump_json(nlohmann::json(std::string(s)));
        return;
      }
    }
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        const char u[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(u, sizeof u);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void put_int(std::string& out, std::int64_t v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace

Result<ListQuery> parse_list_query(const std::map<std::string, std::string>& params) {
  ListQuery q;
  for (const auto& [k, v] : params)
    if (auto st = apply_param(q, k, v); !st.ok()) return st.error();
  if (q.page.vm_state == VmState::deleted) q.page.include_deleted = true;  // what else could it mean
  return q;
}

std::string instances_path(const std::map<std::string, std::string>& params) {
  std::string out = "/v1/instances";
  for (const auto& [k, v] : params)
    ((out += out.size() == 13 ? '?' : '&') += http::percent_encode(k) + '=') += http::percent_encode(v);
  return out;
}

void append_instance_json(std::string& out, const InstanceRowView& r,
                          const std::optional<std::string_view>& power_state) {
  out += "{\"created_at\":";
  put_int(out, r.created_at);
  out += ",\"deleted_at\":";
  if (r.deleted_at == 0)
    out += "null";
  else
    put_int(out, r.deleted_at);
  out += ",\"host\":";
  put_string(out, r.host);
  out += ",\"image\":";
  put_string(out, r.image_id);
  out += ",\"memory_mb\":";
  put_int(out, r.memory_mb);
  out += ",\"name\":";
  put_string(out, r.name);
  if (power_state) {
    out += ",\"power_state\":";
    if (power_state->empty())
      out += "null";
    else
      put_string(out, *power_state);
  }
  out += ",\"task_state\":";
  if (r.task_state == TaskState::none)
    out += "null";
  else
    put_string(out, to_string(r.task_state));
  out += ",\"updated_at\":";
  put_int(out, r.updated_at);
  out += ",\"uuid\":";
  put_string(out, r.uuid);
  out += ",\"vcpus\":";
  put_int(out, r.vcpus);
  out += ",\"vm_state\":";
  put_string(out, to_string(r.vm_state));
  out += '}';
}

}  // namespace virtcap::api
