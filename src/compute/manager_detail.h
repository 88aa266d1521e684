// What manager.cpp and reconcile.cpp share; not part of the module's interface.
#pragma once

#include <cstdint>
#include <string>

namespace virtcap::compute::detail {

std::int64_t now_seconds();
// 8-4-4-4-12 with dashes where a uuid has them (the digits are not checked).
bool looks_like_uuid(const std::string& s);

}  // namespace virtcap::compute::detail
