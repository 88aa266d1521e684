// Looking up a group by name (getgrnam_r), for options that name one.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace virtcap {

// The group's id, or nullopt when this host has no such group (or the
// lookup failed).
std::optional<gid_t> group_id(const std::string& name);

}  // namespace virtcap
