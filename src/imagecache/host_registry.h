// The hosts that share an instances path register there, one file per host:
//   <instances_path>/hosts/<host>.json   {"host": ..., "updated_at": unix seconds}
// written atomically (temporary file, fsync, rename). The manager adds these
// hosts to those the store knows when it gathers instances for the image-cache
// pass. Registration is only ever additive information: a disk on the storage
// protects its base file whether or not its host registered (see pass.h).
#pragma once

#include <string>
#include <vector>

#include "virtcap/error.h"

namespace virtcap::imagecache {

Status register_host(const std::string& instances_path, const std::string& host);
// Registered host names, sorted. A missing registry is an empty list.
Result<std::vector<std::string>> registered_hosts(const std::string& instances_path);

}  // namespace virtcap::imagecache
