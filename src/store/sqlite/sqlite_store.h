// An InstanceStore on a local SQLite database (one file, WAL mode). See
// docs/store.md for the schema, migrations and error behaviour.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "virtcap/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace virtcap::store {

class SqliteStore : public InstanceStore {
 public:
  static constexpr std::chrono::milliseconds kDefaultBusyTimeout{5000};

  // Opens (creating if missing) the store at `path`, creating its parent
  // directory (mode 0700) if needed, checking the file, switching it to WAL
  // and migrating the schema up to latest_schema_version(). Fails with
  // store_error, and leaves the file untouched, if the file is not a valid
  // virtcap database, its schema is newer than this binary knows, or another
  // process holds the write lock for longer than `busy_timeout`.
  static Result<std::unique_ptr<SqliteStore>> open(
      const std::string& path, std::chrono::milliseconds busy_timeout = kDefaultBusyTimeout);

  // The schema version (PRAGMA user_version) the last migration produces.
  static int latest_schema_version();
  // The PRAGMA application_id every virtcap store carries.
  static constexpr int kApplicationId = 0x76637031;  // "vcp1"

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Status register_host(const HostRecord& host) override;
  Result<std::vector<std::string>> hosts_sharing(const std::string& instances_path) override;
  Result<std::vector<InstanceRecord>> live_instances_on(const std::vector<std::string>& hosts) override;
  Status create_instance(const InstanceRecord& record) override;
  Result<InstanceRecord> get_instance(const std::string& uuid) override;
  Status update_instance(const InstanceRecord& record) override;
  Result<std::vector<InstanceRecord>> list_instances(const std::string& host, bool include_deleted) override;
  // Steps one SQLite statement (for the default order, index
  // instances_host_order, seeking straight to the marker) and hands each row
  // to `visit` as views of SQLite's own memory. The store's lock is held meanwhile: `visit` must not call the
  // store.
  Result<InstancePageInfo> visit_instances(const InstancePageQuery& query,
                                           const InstanceVisitor& visit) override;
  // own_writes: sqlite3_total_changes64 (every row this connection changed,
  // whichever statement did it); other_writers: PRAGMA data_version, which
  // moves when any other connection, in any process, commits to the file.
  // nullopt when the pragma cannot be read.
  std::optional<ContentsVersion> contents_version() override;

  // Every registered host, by name.
  Result<std::vector<HostRecord>> list_hosts();
  // The database file, as given to open().
  const std::string& path() const { return path_; }

 private:
  class Stmt;
  class Txn;

  SqliteStore(std::string path, sqlite3* db, std::chrono::milliseconds busy_timeout);

  // The open-time checks, WAL switch and migrations.
  Status initialise();
  Status check_file() REQUIRES(mu_);
  Status migrate() REQUIRES(mu_);
  // The cached prepared statement for `sql`, reset and unbound again when the
  // returned handle goes away.
  Result<Stmt> prepare(std::string_view sql) REQUIRES(mu_);
  // Runs a statement that returns no rows (BEGIN, COMMIT, PRAGMA x = y).
  Status exec(std::string_view sql, std::string_view doing) REQUIRES(mu_);
  // The error for a failed SQLite call on this connection: a lock error for
  // SQLITE_BUSY, "not a valid virtcap database" for NOTADB/CORRUPT during
  // open, else store_error with SQLite's message and the path.
  Error failure(int rc, std::string_view doing) const REQUIRES(mu_);
  Error not_a_virtcap_database(std::string_view why) const;
  // already_exists for a record whose name a live instance of its host holds.
  Error live_name_taken(const InstanceRecord& record) REQUIRES(mu_);

  std::string path_;
  sqlite3* db_ = nullptr;
  std::chrono::milliseconds busy_timeout_;
  Mutex mu_;  // one caller at a time on the connection
  bool opening_ GUARDED_BY(mu_) = true;
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_ GUARDED_BY(mu_);
};

}  // namespace virtcap::store
