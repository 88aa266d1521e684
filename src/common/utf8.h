// Text from outside (file names, paths, error strings) may be any bytes; JSON
// must be UTF-8, and nlohmann::json::dump() throws on anything else.
#pragma once

#include <string>
#include <string_view>

namespace virtcap {

// `s` unchanged when it is valid UTF-8; otherwise each invalid byte (or
// truncated, overlong or surrogate sequence) replaced by U+FFFD - the same
// result as nlohmann's error_handler_t::replace.
std::string utf8_safe(std::string_view s);
bool is_valid_utf8(std::string_view s);

}  // namespace virtcap
