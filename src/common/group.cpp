#include "common/group.h"

#include <grp.h>

#include <cerrno>
#include <vector>

namespace virtcap {

std::optional<gid_t> group_id(const std::string& name) {
  std::vector<char> buf(4096);
  for (;;) {
    struct group g {};
    struct group* found = nullptr;
    const int rc = ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (std::size_t{1} << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc != 0 || found == nullptr) return std::nullopt;
    return g.gr_gid;
  }
}

}  // namespace virtcap
