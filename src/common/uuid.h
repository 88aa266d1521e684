// The one uuid check.
#pragma once

#include <string_view>

namespace virtcap {

// True for a uuid as virtcap writes it and libvirt prints it: 36 characters,
// 8-4-4-4-12 lower-case hex digits separated by '-'. Upper case, braces and
// other spellings are not uuids (see docs/design.md, "Uuids").
bool is_uuid(std::string_view s);

}  // namespace virtcap
