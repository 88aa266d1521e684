#pragma once

#include <string>
#include <string_view>

namespace virtcap {

// Lower-case hex SHA-1 of `data` (OpenSSL libcrypto). Used to name cached
// base images: <instances_path>/_base/<sha1-hex of image id>.
std::string sha1_hex(std::string_view data);

}  // namespace virtcap
