// Listen addresses and host names, as the config, the HTTP server and the
// CLI read them.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace virtcap {

// "127.0.0.1:8774" -> {"127.0.0.1", 8774}; "[::1]:80" -> {"::1", 80}. nullopt if malformed.
std::optional<std::pair<std::string, int>> split_listen(const std::string& v);
// Only the literal loopback addresses (127.0.0.0/8, ::1) and the name
// "localhost"; a DNS name that merely starts with "127." is not loopback.
bool is_loopback(const std::string& host);

}  // namespace virtcap
