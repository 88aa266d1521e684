// A fleet query in Placement's syntax, parsed from query parameters:
//   required=A,B,!C     (repeatable; ! = forbidden)
//   required=in:D,E     (any of D, E; repeatable, each is one group)
//   resources=VCPU:2,MEMORY_MB:2048,DISK_GB:10
//   limit=N             (1..kMaxLimit, default kDefaultLimit)
//   include_down=true|false
// Every limit below is checked before any work; a violation is an
// invalid_argument naming the bad text.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fleet/model.h"

namespace virtcap::fleet {

inline constexpr std::size_t kMaxQueryParams = 64;        // parameters of any kind
inline constexpr std::size_t kMaxQueryParamBytes = 8192;  // one value
inline constexpr std::size_t kMaxQueryTraits = 128;       // trait names over all required= params
inline constexpr std::size_t kDefaultLimit = 100;
inline constexpr std::size_t kMaxLimit = 10000;

struct Query {
  std::vector<std::string> required;             // sorted, unique
  std::vector<std::string> forbidden;            // sorted, unique
  std::vector<std::vector<std::string>> any_of;  // each group sorted, unique
  std::array<std::optional<std::int64_t>, kResourceClassCount> resources;
  std::size_t limit = kDefaultLimit;
  bool include_down = false;
};

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// Parses (already percent-decoded) parameters. Unknown parameter names,
// malformed trait names, unknown resource classes, negative or malformed
// amounts, a trait both required and forbidden, and anything over the limits
// above are invalid_argument.
Result<Query> parse_query(const QueryParams& params);

}  // namespace virtcap::fleet
