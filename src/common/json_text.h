// The one way virtcap turns JSON into text. Strings in it may come from
// outside (paths, names, file names, error messages) and need not be valid
// UTF-8; nlohmann's plain dump() throws on those. This helper replaces each
// invalid byte sequence with U+FFFD instead, so no input can make a dump
// throw. tests/unit/json_text_test.cpp fails on any other dump call in src/.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace virtcap {

// indent < 0: compact, one line.
std::string dump_json(const nlohmann::json& j, int indent = -1);

}  // namespace virtcap
