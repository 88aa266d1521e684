#include "fleet/query.h"

#include <algorithm>
#include <charconv>

namespace virtcap::fleet {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const auto pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

void sort_unique(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

Result<std::int64_t> parse_amount(std::string_view text, std::string_view what) {
  std::int64_t v = 0;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end)
    return invalid_argument_error(std::string(what) + ": " + quote_for_error(text) +
                                  " is not a whole number");
  if (v < 0)
    return invalid_argument_error(std::string(what) + ": negative amount " + quote_for_error(text) +
                                  ": ask for 0 or more");
  return v;
}

class Parser {
 public:
  Result<Query> run(const QueryParams& params) {
    if (params.size() > kMaxQueryParams)
      return invalid_argument_error(std::to_string(params.size()) + " query parameters: at most " +
                                    std::to_string(kMaxQueryParams) +
                                    " are accepted; merge required= lists (required=A,B,!C)");
    for (const auto& [key, value] : params) {
      if (value.size() > kMaxQueryParamBytes)
        return invalid_argument_error("query parameter " + quote_for_error(key) + " is " +
                                      std::to_string(value.size()) + " bytes: at most " +
                                      std::to_string(kMaxQueryParamBytes));
      if (auto st = one(key, value); !st.ok()) return st.error();
    }
    for (const auto& f : q_.forbidden)
      if (std::binary_search(q_.required.begin(), q_.required.end(), f))
        return invalid_argument_error("trait " + f + " is both required and forbidden");
    return std::move(q_);
  }

 private:
  Status one(const std::string& key, const std::string& value) {
    if (key == "required") return required(value);
    if (key == "resources") return resources(value);
    if (key == "limit") return limit(value);
    if (key == "include_down") return include_down(value);
    return invalid_argument_error("unknown query parameter " + quote_for_error(key) +
                                  ": use required, resources, limit or include_down");
  }

  Status count_traits(std::size_t n) {
    traits_ += n;
    if (traits_ > kMaxQueryTraits)
      return invalid_argument_error("more than " + std::to_string(kMaxQueryTraits) +
                                    " trait names in one query");
    return {};
  }

  Status required(std::string_view value) {
    const bool any = value.starts_with("in:");
    if (any) value.remove_prefix(3);
    const auto names = split(value, ',');
    if (auto st = count_traits(names.size()); !st.ok()) return st;
    std::vector<std::string> group;
    for (auto name : names) {
      const bool forbid = !any && name.starts_with('!');
      if (forbid) name.remove_prefix(1);
      if (auto st = check_trait_name(name); !st.ok())
        return invalid_argument_error("required=" + quote_for_error(value) + ": " + st.error().message);
      (any ? group : forbid ? q_.forbidden : q_.required).emplace_back(name);
    }
    if (any) {
      sort_unique(group);
      q_.any_of.push_back(std::move(group));
    }
    sort_unique(q_.required);
    sort_unique(q_.forbidden);
    return {};
  }

  Status resources(std::string_view value) {
    for (auto item : split(value, ',')) {
      const auto colon = item.find(':');
      if (colon == std::string_view::npos)
        return invalid_argument_error("resources=" + quote_for_error(value) +
                                      ": expected CLASS:AMOUNT, e.g. VCPU:2");
      auto rc = resource_class_from_string(item.substr(0, colon));
      if (!rc.ok()) return rc.error();
      auto amount = parse_amount(item.substr(colon + 1), "resources " + std::string(to_string(*rc)));
      if (!amount.ok()) return amount.error();
      auto& slot = q_.resources[static_cast<std::size_t>(*rc)];
      if (slot) return invalid_argument_error("resources: " + std::string(to_string(*rc)) + " given twice");
      slot = *amount;
    }
    return {};
  }

  Status limit(std::string_view value) {
    auto n = parse_amount(value, "limit");
    if (!n.ok()) return n.error();
    if (*n < 1 || static_cast<std::size_t>(*n) > kMaxLimit)
      return invalid_argument_error("limit " + quote_for_error(value) + " is not in 1.." +
                                    std::to_string(kMaxLimit));
    q_.limit = static_cast<std::size_t>(*n);
    return {};
  }

  Status include_down(std::string_view value) {
    if (value == "true" || value == "1") {
      q_.include_down = true;
    } else if (value == "false" || value == "0") {
      q_.include_down = false;
    } else {
      return invalid_argument_error("include_down=" + quote_for_error(value) + ": use true or false");
    }
    return {};
  }

  Query q_;
  std::size_t traits_ = 0;
};

}  // namespace

Result<Query> parse_query(const QueryParams& params) { return Parser().run(params); }

}  // namespace virtcap::fleet
