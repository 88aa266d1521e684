// The default InstanceStore::visit_instances, and the pieces every store's
// paging shares.
#include <algorithm>
#include <utility>

#include "common/strings.h"
#include "virtcap/store.h"

namespace virtcap {

namespace {

constexpr std::pair<std::string_view, InstanceSortKey> kSortKeys[] = {
    {"created_at", InstanceSortKey::created_at},
    {"updated_at", InstanceSortKey::updated_at},
    {"name", InstanceSortKey::name},
    {"vm_state", InstanceSortKey::vm_state},
    {"memory_mb", InstanceSortKey::memory_mb},
    {"vcpus", InstanceSortKey::vcpus},
    {"uuid", InstanceSortKey::uuid},
};

template <class T>
int three_way(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

// a against b by `key`, then uuid: the order SQLite's ORDER BY key, uuid
// gives (text compares bytewise, as its BINARY collation does; a vm_state by
// its name, as the column holds it).
int compare(const InstanceRecord& a, const InstanceRecord& b, InstanceSortKey key) {
  int c = 0;
  switch (key) {
    case InstanceSortKey::created_at: c = three_way(a.created_at, b.created_at); break;
    case InstanceSortKey::updated_at: c = three_way(a.updated_at, b.updated_at); break;
    case InstanceSortKey::name: c = a.name.compare(b.name); break;
    case InstanceSortKey::vm_state: c = to_string(a.vm_state).compare(to_string(b.vm_state)); break;
    case InstanceSortKey::memory_mb: c = three_way(a.memory_mb, b.memory_mb); break;
    case InstanceSortKey::vcpus: c = three_way(a.vcpus, b.vcpus); break;
    case InstanceSortKey::uuid: break;
  }
  return c != 0 ? c : a.uuid.compare(b.uuid);
}

}  // namespace

std::optional<InstanceSortKey> parse_sort_key(std::string_view name) {
  for (const auto& [n, k] : kSortKeys)
    if (n == name) return k;
  return std::nullopt;
}

std::string_view to_string(InstanceSortKey key) {
  for (const auto& [n, k] : kSortKeys)
    if (k == key) return n;
  return "?";
}

std::string sort_key_names() {
  return join(kSortKeys, ", ", [](const auto& e) { return e.first; });
}

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
  return make_error(Errc::invalid_argument,
                    "marker '" + query.marker + "' is not an instance of host " + query.host +
                        "; page with the uuid of the last instance of the previous page");
}

Result<InstancePageInfo> visit_records(std::vector<const InstanceRecord*> rows,
                                       const InstancePageQuery& query, const InstanceVisitor& visit) {
  if (Status st = check_page_query(query); !st.ok()) return st.error();
  std::sort(rows.begin(), rows.end(), [&](const InstanceRecord* a, const InstanceRecord* b) {
    const int c = compare(*a, *b, query.sort_key);
    return query.descending ? c > 0 : c < 0;
  });
  auto it = rows.begin();
  if (!query.marker.empty()) {
    it = std::find_if(rows.begin(), rows.end(),
                      [&](const InstanceRecord* r) { return r->uuid == query.marker; });
    if (it == rows.end()) return marker_not_found(query);
    ++it;
  }
  InstancePageInfo info;
  info.next_marker = query.marker;
  for (; it != rows.end(); ++it) {
    const InstanceRecord& r = **it;
    if (!query.include_deleted && r.deleted_at != 0) continue;
    if (query.vm_state && r.vm_state != *query.vm_state) continue;
    const InstanceRowView view = row_view(r);
    if (query.accept && !query.accept(view)) continue;
    if (info.rows == query.limit) {
      info.more = true;
      break;
    }
    visit(view);
    info.next_marker = r.uuid;
    ++info.rows;
  }
  if (!info.more) info.next_marker.clear();
  return info;
}

Result<InstancePageInfo> InstanceStore::visit_instances(const InstancePageQuery& query,
                                                        const InstanceVisitor& visit) {
  if (Status st = check_page_query(query); !st.ok()) return st.error();
  auto all = list_instances(query.host, true);  // deleted too: the marker may be one
  if (!all.ok()) return all.error();
  std::vector<const InstanceRecord*> rows;
  rows.reserve(all->size());
  for (const auto& r : *all) rows.push_back(&r);
  return visit_records(std::move(rows), query, visit);
}

}  // namespace virtcap
