#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <set>
#include <type_traits>
#include <utility>

#include "common/lock_file.h"
#include "store/sqlite/sqlite_internal.h"

namespace virtcap::store {
namespace {

#define VIRTCAP_INSTANCE_COLUMNS \
  "uuid, name, host, image_id, memory_mb, vcpus, vm_state, task_state, created_at, updated_at, deleted_at"

constexpr const char* kInsertInstance = "INSERT INTO instances (" VIRTCAP_INSTANCE_COLUMNS
                                        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
constexpr const char* kUpdateInstance =
    "UPDATE instances SET name = ?2, host = ?3, image_id = ?4, memory_mb = ?5, vcpus = ?6, vm_state = ?7, "
    "task_state = ?8, created_at = ?9, updated_at = ?10, deleted_at = ?11 WHERE uuid = ?1";
constexpr const char* kGetInstance = "SELECT " VIRTCAP_INSTANCE_COLUMNS " FROM instances WHERE uuid = ?1";
constexpr const char* kListInstances = "SELECT " VIRTCAP_INSTANCE_COLUMNS
                                       " FROM instances WHERE host = ?1 AND (?2 != 0 OR deleted_at = 0)"
                                       " ORDER BY created_at, uuid";
// A page (visit_instances) in `key` order, uuid breaking ties, optionally
// after a marker (keyset: rows whose (key, uuid) follow the marker's), so
// SQLite seeks straight to the marker when an index has the order
// (instances_host_order: the default created_at order). ?3 is the vm_state
// filter ('' for none), ?5 the row limit (-1: none). The key is one of the
// whitelisted InstanceSortKey columns, never input text.
std::string page_sql(InstanceSortKey sort_key, bool descending, bool after_marker) {
  const std::string key(to_string(sort_key));
  const std::string dir = descending ? " DESC" : "";
  std::string sql =
      "SELECT " VIRTCAP_INSTANCE_COLUMNS
      " FROM instances WHERE host = ?1 AND (?2 != 0 OR deleted_at = 0) AND (?3 = '' OR vm_state = ?3)";
  if (after_marker)
    sql += " AND (" + key + ", uuid) " + (descending ? "<" : ">") + " ((SELECT " + key +
           " FROM instances WHERE uuid = ?4), ?4)";
  return sql + " ORDER BY " + key + dir + ", uuid" + dir + " LIMIT ?5";
}
constexpr const char* kMarkerPosition = "SELECT host FROM instances WHERE uuid = ?1";
constexpr const char* kLiveOnHost =
    "SELECT " VIRTCAP_INSTANCE_COLUMNS " FROM instances WHERE host = ?1 AND deleted_at = 0";
constexpr const char* kLiveNameHolder =
    "SELECT uuid FROM instances WHERE host = ?1 AND name = ?2 AND deleted_at = 0";
constexpr const char* kRegisterHost =
    "INSERT INTO hosts (host, instances_path, updated_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (host) DO UPDATE SET instances_path = excluded.instances_path, updated_at = "
    "excluded.updated_at";
constexpr const char* kHostsSharing = "SELECT host FROM hosts WHERE instances_path = ?1 ORDER BY host";
constexpr const char* kListHosts = "SELECT host, instances_path, updated_at FROM hosts ORDER BY host";

#undef VIRTCAP_INSTANCE_COLUMNS

template <class Stmt>
void bind_record(Stmt& st, const InstanceRecord& r) {
  st.bind(1, r.uuid);
  st.bind(2, r.name);
  st.bind(3, r.host);
  st.bind(4, r.image_id);
  st.bind(5, std::int64_t{r.memory_mb});
  st.bind(6, std::int64_t{r.vcpus});
  st.bind(7, to_string(r.vm_state));
  st.bind(8, to_string(r.task_state));
  st.bind(9, r.created_at);
  st.bind(10, r.updated_at);
  st.bind(11, r.deleted_at);
}

// The row's vm_state and task_state columns: a name virtcap does not write
// is a store_error naming the instance, not a state guessed at.
template <class Stmt>
Status read_states(const Stmt& st, VmState& vm_state, TaskState& task_state) {
  const auto vm = vm_state_from_string(st.view(6));
  const auto task = task_state_from_string(st.view(7));
  if (!vm || !task)
    return make_error(Errc::store_error, "instance " + std::string(st.view(0)) + " has vm_state '" +
                                             std::string(st.view(6)) + "' and task_state '" +
                                             std::string(st.view(7)) +
                                             "' in the store; this virtcap does not know one of them");
  vm_state = *vm;
  task_state = *task;
  return {};
}

// The current row (VIRTCAP_INSTANCE_COLUMNS, in order) as a Row: an
// InstanceRecord owns copies of its text; an InstanceRowView's text views
// SQLite's column memory (valid until the next step).
template <class Row, class Stmt>
Result<Row> read_row(const Stmt& st) {
  const auto text = [&st](int col) {
    if constexpr (std::is_same_v<Row, InstanceRowView>)
      return st.view(col);
    else
      return st.text(col);
  };
  Row r;
  r.uuid = text(0);
  r.name = text(1);
  r.host = text(2);
  r.image_id = text(3);
  r.memory_mb = static_cast<int>(st.int64(4));
  r.vcpus = static_cast<int>(st.int64(5));
  if (Status s = read_states(st, r.vm_state, r.task_state); !s.ok()) return s.error();
  r.created_at = st.int64(8);
  r.updated_at = st.int64(9);
  r.deleted_at = st.int64(10);
  return r;
}

}  // namespace

SqliteStore::SqliteStore(std::string path, sqlite3* db, std::chrono::milliseconds busy_timeout)
    : path_(std::move(path)), db_(db), busy_timeout_(busy_timeout) {}

SqliteStore::~SqliteStore() {
  for (auto& entry : stmts_) sqlite3_finalize(entry.second);
  sqlite3_close_v2(db_);
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path,
                                                       std::chrono::milliseconds busy_timeout) {
  if (path.empty()) return make_error(Errc::invalid_argument, "the instance store path is empty");
  if (busy_timeout.count() < 0)
    return make_error(Errc::invalid_argument, "the instance store busy timeout must not be negative");
  // The missing directories of the file's path, each with mode 0700.
  if (const auto dir = std::filesystem::path(path).parent_path(); !dir.empty())
    if (auto st = make_dirs(dir.string(), 0700, "the instance store directory"); !st.ok()) return st.error();
  // A new database is created owner-only (SQLite would use the umask's mode);
  // its -wal and -shm files inherit the mode. An existing file is untouched.
  if (int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600); fd >= 0) ::close(fd);

  sqlite3* db = nullptr;
  // NOMUTEX: every use of the connection is under the store's own mutex
  // (mu_), so SQLite's per-call connection mutex only cost time - in a
  // 1,000-row page, 22,000 lock/unlock pairs for the column reads, most of
  // the page's CPU time (docs/benchmarks.md).
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Error e = make_error(Errc::store_error, "cannot open the instance store " + path + ": " +
                                                (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    e.backend_code = db != nullptr ? sqlite3_extended_errcode(db) : rc;
    sqlite3_close_v2(db);
    return e;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(
      db, static_cast<int>(std::min<std::chrono::milliseconds::rep>(busy_timeout.count(), INT_MAX)));

  std::unique_ptr<SqliteStore> store(new SqliteStore(path, db, busy_timeout));
  if (auto st = store->initialise(); !st.ok()) return st.error();
  return Result<std::unique_ptr<SqliteStore>>(std::move(store));
}

Result<SqliteStore::Stmt> SqliteStore::prepare(std::string_view sql) {
  auto it = stmts_.find(sql);
  if (it == stmts_.end()) {
    sqlite3_stmt* s = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
      Error e = failure(rc, "preparing '" + std::string(sql) + "'");
      sqlite3_finalize(s);
      return e;
    }
    it = stmts_.emplace(std::string(sql), s).first;
  }
  return Stmt(it->second);
}

Status SqliteStore::exec(std::string_view sql, std::string_view doing) {
  auto st = prepare(sql);
  if (!st.ok()) return st.error();
  const int rc = st->step();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return failure(rc, doing);
  return {};
}

Error SqliteStore::failure(int rc, std::string_view doing) const {
  const std::string msg = sqlite3_extended_errcode(db_) == rc ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  Error e;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    e = make_error(
        Errc::store_error,
        "the instance store " + path_ + " is locked by another process: " + std::string(doing) +
            " was still blocked after waiting " + std::to_string(busy_timeout_.count()) +
            " ms (SQLite: " + msg +
            "); stop the other process holding it (another virtcap, or an sqlite3 shell with an open "
            "transaction) and retry");
  } else if (opening_ && (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)) {
    e = not_a_virtcap_database("SQLite: " + msg);
  } else if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
    e = make_error(Errc::store_error, "the instance store " + path_ + " is damaged: " + std::string(doing) +
                                          " failed (SQLite: " + msg +
                                          "); stop virtcap and restore the store from a backup");
  } else {
    e = make_error(Errc::store_error,
                   "instance store " + path_ + ": " + std::string(doing) + " failed (SQLite: " + msg + ")");
  }
  e.backend_code = rc;
  return e;
}

Error SqliteStore::not_a_virtcap_database(std::string_view why) const {
  return make_error(Errc::store_error, path_ + " is not a valid virtcap database (" + std::string(why) +
                                           "); it was left untouched — restore it from a backup, or move it "
                                           "aside (e.g. mv " +
                                           path_ + " " + path_ + ".bad) to start with a new, empty store");
}

// ---------------------------------------------------------------------------

Status SqliteStore::register_host(const HostRecord& host) {
  MutexLock lock(mu_);
  Txn txn(*this);
  if (auto st = txn.begin_write(); !st.ok()) return st;
  {
    auto st = prepare(kRegisterHost);
    if (!st.ok()) return st.error();
    st->bind(1, host.host);
    st->bind(2, host.instances_path);
    st->bind(3, host.updated_at);
    if (const int rc = st->step(); rc != SQLITE_DONE) return failure(rc, "registering host " + host.host);
  }
  return txn.commit();
}

Result<std::vector<std::string>> SqliteStore::hosts_sharing(const std::string& instances_path) {
  MutexLock lock(mu_);
  auto st = prepare(kHostsSharing);
  if (!st.ok()) return st.error();
  st->bind(1, instances_path);
  std::vector<std::string> out;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) out.push_back(st->text(0));
  if (rc != SQLITE_DONE) return failure(rc, "listing the hosts sharing " + instances_path);
  return out;
}

Result<std::vector<HostRecord>> SqliteStore::list_hosts() {
  MutexLock lock(mu_);
  auto st = prepare(kListHosts);
  if (!st.ok()) return st.error();
  std::vector<HostRecord> out;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    HostRecord h;
    h.host = st->text(0);
    h.instances_path = st->text(1);
    h.updated_at = st->int64(2);
    out.push_back(std::move(h));
  }
  if (rc != SQLITE_DONE) return failure(rc, "listing the hosts");
  return out;
}

Result<std::vector<InstanceRecord>> SqliteStore::live_instances_on(const std::vector<std::string>& hosts) {
  MutexLock lock(mu_);
  std::vector<InstanceRecord> out;
  const std::set<std::string> distinct(hosts.begin(), hosts.end());
  if (distinct.empty()) return out;
  Txn txn(*this);  // one snapshot across the per-host queries
  if (auto st = txn.begin_read(); !st.ok()) return st.error();
  for (const auto& host : distinct) {
    auto st = prepare(kLiveOnHost);
    if (!st.ok()) return st.error();
    st->bind(1, host);
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      auto r = read_row<InstanceRecord>(*st);
      if (!r.ok()) return r.error();
      out.push_back(std::move(*r));
    }
    if (rc != SQLITE_DONE) return failure(rc, "listing the live instances of host " + host);
  }
  if (auto st = txn.commit(); !st.ok()) return st.error();
  std::sort(out.begin(), out.end(),
            [](const InstanceRecord& a, const InstanceRecord& b) { return a.uuid < b.uuid; });
  return out;
}

Status SqliteStore::create_instance(const InstanceRecord& record) {
  MutexLock lock(mu_);
  Txn txn(*this);
  if (auto st = txn.begin_write(); !st.ok()) return st;
  {
    auto st = prepare(kInsertInstance);
    if (!st.ok()) return st.error();
    bind_record(*st, record);
    const int rc = st->step();
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
      return make_error(Errc::already_exists, "instance " + record.uuid + " is already in the store");
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      st->reset();
      return live_name_taken(record);
    }
    if (rc != SQLITE_DONE) return failure(rc, "creating instance " + record.uuid);
  }
  return txn.commit();
}

Result<InstanceRecord> SqliteStore::get_instance(const std::string& uuid) {
  MutexLock lock(mu_);
  auto st = prepare(kGetInstance);
  if (!st.ok()) return st.error();
  st->bind(1, uuid);
  const int rc = st->step();
  if (rc == SQLITE_ROW) return read_row<InstanceRecord>(*st);
  if (rc == SQLITE_DONE) return make_error(Errc::not_found, "no instance " + uuid + " in the store");
  return failure(rc, "reading instance " + uuid);
}

Status SqliteStore::update_instance(const InstanceRecord& record) {
  MutexLock lock(mu_);
  Txn txn(*this);
  if (auto st = txn.begin_write(); !st.ok()) return st;
  {
    auto st = prepare(kUpdateInstance);
    if (!st.ok()) return st.error();
    bind_record(*st, record);
    const int rc = st->step();
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      st->reset();
      return live_name_taken(record);
    }
    if (rc != SQLITE_DONE) return failure(rc, "updating instance " + record.uuid);
    if (sqlite3_changes(db_) == 0)
      return make_error(Errc::not_found, "no instance " + record.uuid + " in the store");
  }
  return txn.commit();
}

Result<std::vector<InstanceRecord>> SqliteStore::list_instances(const std::string& host,
                                                                bool include_deleted) {
  MutexLock lock(mu_);
  auto st = prepare(kListInstances);
  if (!st.ok()) return st.error();
  st->bind(1, host);
  st->bind(2, std::int64_t{include_deleted ? 1 : 0});
  std::vector<InstanceRecord> out;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    auto r = read_row<InstanceRecord>(*st);
    if (!r.ok()) return r.error();
    out.push_back(std::move(*r));
  }
  if (rc != SQLITE_DONE) return failure(rc, "listing the instances of host " + host);
  return out;
}

Result<InstancePageInfo> SqliteStore::visit_instances(const InstancePageQuery& query,
                                                      const InstanceVisitor& visit) {
  if (Status st = check_page_query(query); !st.ok()) return st.error();
  MutexLock lock(mu_);
  Txn txn(*this);  // the marker's position and the page from one snapshot
  if (auto st = txn.begin_read(); !st.ok()) return st.error();
  if (!query.marker.empty()) {
    auto st = prepare(kMarkerPosition);
    if (!st.ok()) return st.error();
    st->bind(1, query.marker);
    const int rc = st->step();
    if (rc == SQLITE_DONE || (rc == SQLITE_ROW && st->view(0) != query.host)) return marker_not_found(query);
    if (rc != SQLITE_ROW) return failure(rc, "finding marker " + query.marker);
  }
  InstancePageInfo info;
  info.next_marker = query.marker;
  {
    auto st = prepare(page_sql(query.sort_key, query.descending, !query.marker.empty()));
    if (!st.ok()) return st.error();
    st->bind(1, query.host);
    st->bind(2, std::int64_t{query.include_deleted ? 1 : 0});
    st->bind(3, query.vm_state ? to_string(*query.vm_state) : std::string_view(""));  // "": any
    if (!query.marker.empty()) st->bind(4, query.marker);
    // One more row than the page tells whether more follow; with a row
    // filter of the caller's, rows are stepped until the page is full.
    st->bind(5, query.accept ? std::int64_t{-1} : static_cast<std::int64_t>(query.limit) + 1);
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      const auto read = read_row<InstanceRowView>(*st);
      if (!read.ok()) return read.error();
      const InstanceRowView& row = *read;
      if (query.accept && !query.accept(row)) continue;
      if (info.rows == query.limit) {
        info.more = true;
        break;
      }
      visit(row);
      info.next_marker.assign(row.uuid);  // reuses its capacity: no allocation per row
      ++info.rows;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return failure(rc, "listing the instances of host " + query.host);
  }
  if (auto st = txn.commit(); !st.ok()) return st.error();
  if (!info.more) info.next_marker.clear();
  return info;
}

std::optional<ContentsVersion> SqliteStore::contents_version() {
  MutexLock lock(mu_);
  auto dv = prepare("PRAGMA data_version");
  if (!dv.ok() || dv->step() != SQLITE_ROW) return std::nullopt;
  return ContentsVersion{static_cast<std::uint64_t>(sqlite3_total_changes64(db_)),
                         static_cast<std::uint64_t>(dv->int64(0))};
}

Error SqliteStore::live_name_taken(const InstanceRecord& record) {
  std::string holder;
  {
    auto st = prepare(kLiveNameHolder);
    if (st.ok()) {
      st->bind(1, record.host);
      st->bind(2, record.name);
      if (st->step() == SQLITE_ROW) holder = st->text(0);
    }
  }
  return make_error(Errc::already_exists, "host " + record.host + " already has a live instance named '" +
                                              record.name + "'" +
                                              (holder.empty() ? "" : " (" + holder + ")"));
}

}  // namespace virtcap::store
