// The default InstanceStore::visit_instances, and the pieces every store's
// paging shares.
#include <algorithm>

#include "virtcap/store.h"

namespace virtcap {

InstanceRowView row_view(const InstanceRecord& r) {
  InstanceRowView v;
  v.uuid = r.uuid;
  v.name = r.name;
  v.host = r.host;
  v.image_id = r.image_id;
  v.memory_mb = r.memory_mb;
  v.vcpus = r.vcpus;
  v.vm_state = r.vm_state;
  v.task_state = r.task_state;
  v.created_at = r.created_at;
  v.updated_at = r.updated_at;
  v.deleted_at = r.deleted_at;
  return v;
}

Status check_page_query(const InstancePageQuery& query) {
  if (query.limit > kMaxInstancePage)
    return make_error(Errc::invalid_argument, "limit " + std::to_string(query.limit) + " is more than the " +
                                                  std::to_string(kMaxInstancePage) +
                                                  " instances a page may hold; ask for " +
                                                  std::to_string(kMaxInstancePage) + " or fewer");
  return {};
}

Error marker_not_found(const InstancePageQuery& query) {
  return make_error(Errc::invalid_argument, "marker '" + query.marker + "' is not an instance of host " + query.host +
                                                "; page with the uuid of the last instance of the previous page");
}

Result<InstancePageInfo> InstanceStore::visit_instances(const InstancePageQuery& query, const InstanceVisitor& visit) {
  if (Status st = check_page_query(query); !st) return st.error();
  auto all = list_instances(query.host, true);  // deleted too: the marker may be one
  if (!all) return all.error();
  auto it = all->begin();
  if (!query.marker.empty()) {
    it = std::find_if(all->begin(), all->end(), [&](const InstanceRecord& r) { return r.uuid == query.marker; });
    if (it == all->end()) return marker_not_found(query);
    ++it;
  }
  InstancePageInfo info;
  info.next_marker = query.marker;
  for (; it != all->end(); ++it) {
    if (!query.include_deleted && it->deleted_at != 0) continue;
    if (info.rows == query.limit) {
      info.more = true;
      break;
    }
    visit(row_view(*it));
    info.next_marker = it->uuid;
    ++info.rows;
  }
  if (!info.more) info.next_marker.clear();
  return info;
}

}  // namespace virtcap
