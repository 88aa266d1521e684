// The instance store interface. The manager is its only user; drivers never
// see it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "virtcap/error.h"
#include "virtcap/instance.h"

namespace virtcap {

// One page of a host's instance list, Nova-style: at most `limit` instances,
// in the list's order (sort_key, then uuid), starting after the instance
// whose uuid is `marker` (empty: from the start). The marker may be a deleted
// instance, so paging goes on when the last instance seen was deleted
// meanwhile; it must be an instance of `host`.
// The columns a list may be sorted by; uuid always breaks ties, in the same
// direction. The default order is created_at ascending.
enum class InstanceSortKey { created_at, updated_at, name, vm_state, memory_mb, vcpus, uuid };
// "created_at" ... (the store's column name); nullopt for anything else.
std::optional<InstanceSortKey> parse_sort_key(std::string_view name);
std::string_view to_string(InstanceSortKey key);
// Every sort key's name, comma-separated (for messages and docs).
std::string sort_key_names();

struct InstanceRowView;

struct InstancePageQuery {
  std::string host;
  bool include_deleted = false;
  std::size_t limit = 1000;
  std::string marker;
  std::optional<VmState> vm_state{};  // only instances in this vm_state; nullopt: any
  InstanceSortKey sort_key = InstanceSortKey::created_at;
  bool descending = false;
  // When set, a row passing the store's own filters is visited (and counted
  // toward `limit`) only if this accepts it. Called under the store's lock:
  // it must be bounded in time and must not call the store.
  std::function<bool(const InstanceRowView&)> accept{};
};

// The most a page may hold, and the page size when a caller gives none.
inline constexpr std::size_t kMaxInstancePage = 1000;

// One instance handed to a visitor: views of the store's own row memory, valid
// only during the visitor call (nothing is copied; copy what you keep).
struct InstanceRowView {
  std::string_view uuid, name, host, image_id;
  int memory_mb = 0;
  int vcpus = 0;
  VmState vm_state = VmState::building;
  TaskState task_state = TaskState::none;
  std::int64_t created_at = 0, updated_at = 0, deleted_at = 0;
};

struct InstancePageInfo {
  std::size_t rows = 0;     // instances visited
  bool more = false;        // instances follow this page
  std::string next_marker;  // the last visited uuid when `more`, else ""
};

using InstanceVisitor = std::function<void(const InstanceRowView&)>;

// Where a store's contents stand: every write counter the store can see. Two
// equal versions, each taken before a read, mean both reads saw the same
// contents, so a page rendered after the first may be served for the second.
struct ContentsVersion {
  std::uint64_t own_writes = 0;     // rows this store object changed since it was opened
  std::uint64_t other_writers = 0;  // a counter that moves when another connection commits
  bool operator==(const ContentsVersion&) const = default;
};

class InstanceStore {
 public:
  virtual ~InstanceStore() = default;

  virtual Status register_host(const HostRecord& host) = 0;
  // Every registered host whose instances path is `instances_path`.
  virtual Result<std::vector<std::string>> hosts_sharing(const std::string& instances_path) = 0;
  // The live (not deleted) instances of the given hosts.
  virtual Result<std::vector<InstanceRecord>> live_instances_on(const std::vector<std::string>& hosts) = 0;

  // Fails with already_exists if the uuid is taken, or if a live instance of
  // the same host already has this name.
  virtual Status create_instance(const InstanceRecord& record) = 0;
  // not_found if there is no such uuid (deleted instances are still found).
  virtual Result<InstanceRecord> get_instance(const std::string& uuid) = 0;
  // Replaces every field of the record with this uuid; not_found if none.
  virtual Status update_instance(const InstanceRecord& record) = 0;
  // The instances of `host`, oldest first; deleted ones only if asked.
  virtual Result<std::vector<InstanceRecord>> list_instances(const std::string& host,
                                                             bool include_deleted) = 0;

  // Streams one page of the host's instances (filtered by vm_state,
  // include_deleted and accept, in sort_key order) to `visit`, one instance
  // at a time, from a single consistent read. invalid_argument when `limit` exceeds
  // kMaxInstancePage or `marker` is not an instance of `host`. `visit` must
  // not call back into the store. This default
  // pages over list_instances(); a store that can stream rows overrides it.
  virtual Result<InstancePageInfo> visit_instances(const InstancePageQuery& query,
                                                   const InstanceVisitor& visit);

  // The store's ContentsVersion, or nullopt when it cannot tell (then nothing
  // derived from its contents may be reused). Take it before the read it
  // vouches for: a write in between makes the next version differ.
  virtual std::optional<ContentsVersion> contents_version() { return std::nullopt; }
};

// The view of a record (for stores that hold InstanceRecords).
InstanceRowView row_view(const InstanceRecord& r);
// invalid_argument when query.limit exceeds kMaxInstancePage.
Status check_page_query(const InstancePageQuery& query);
// The error for a marker that is not an instance of the queried host.
Error marker_not_found(const InstancePageQuery& query);
// One page of `rows` (every instance of query.host, deleted ones included,
// in any order) as visit_instances() defines it: the paging of the stores
// that hold InstanceRecords (the memory store, the default above).
Result<InstancePageInfo> visit_records(std::vector<const InstanceRecord*> rows,
                                       const InstancePageQuery& query, const InstanceVisitor& visit);

}  // namespace virtcap
