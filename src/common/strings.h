// The one comma join: "a, b, c" for messages and lists.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace virtcap {

// The items of `items` (each through `proj`, e.g. a member pointer such as
// &Driver::name) with `sep` between them; "" for none.
template <class Range, class Proj = std::identity>
std::string join(const Range& items, std::string_view sep = ", ", Proj proj = {}) {
  std::string out;
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += sep;
    first = false;
    out += std::invoke(proj, item);
  }
  return out;
}

}  // namespace virtcap
