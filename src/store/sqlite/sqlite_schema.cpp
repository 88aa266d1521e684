// The instance store's schema: its migrations, applied in order at open, and
// the checks that refuse a file that is not a virtcap database or is newer
// than this virtcap (docs/store.md). The reads and writes are in
// sqlite_store.cpp.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>

#include "store/sqlite/sqlite_internal.h"
#include "store/sqlite/sqlite_store.h"

namespace virtcap::store {
namespace {

// The schema, as an ordered list of migrations. Migration N takes the store
// from user_version N-1 to N; it runs in one transaction together with the
// user_version bump. Append only: never edit or reorder a released entry.
struct Migration {
  int version;
  const char* description;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, "instances and hosts", R"sql(
CREATE TABLE instances (
  uuid       TEXT PRIMARY KEY NOT NULL,
  name       TEXT NOT NULL,
  host       TEXT NOT NULL,
  image_id   TEXT NOT NULL DEFAULT '',
  memory_mb  INTEGER NOT NULL DEFAULT 0,
  vcpus      INTEGER NOT NULL DEFAULT 0,
  vm_state   TEXT NOT NULL DEFAULT 'building',
  task_state TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL DEFAULT 0,
  deleted_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_host ON instances (host);
CREATE UNIQUE INDEX instances_live_name ON instances (host, name) WHERE deleted_at = 0;
CREATE TABLE hosts (
  host           TEXT PRIMARY KEY NOT NULL,
  instances_path TEXT NOT NULL,
  updated_at     INTEGER
);
CREATE INDEX hosts_instances_path ON hosts (instances_path);
)sql"},
    {2, "index for paged instance lists", R"sql(
CREATE INDEX instances_host_order ON instances (host, created_at, uuid);
)sql"},
};

constexpr int kLatestVersion = static_cast<int>(std::size(kMigrations));

std::string hex(std::int64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%08llx", static_cast<unsigned long long>(static_cast<std::uint32_t>(v)));
  return buf;
}

}  // namespace

int SqliteStore::latest_schema_version() { return kLatestVersion; }

Status SqliteStore::initialise() {
  MutexLock lock(mu_);
  opening_ = true;
  // Everything before the WAL switch only reads: a file we refuse is left
  // byte-for-byte as it was.
  if (auto st = check_file(); !st.ok()) return st;

  {
    auto wal = prepare("PRAGMA journal_mode = WAL");
    if (!wal.ok()) return wal.error();
    const int rc = wal->step();
    if (rc != SQLITE_ROW) return failure(rc, "switching to WAL mode");
    const std::string mode = wal->text(0);
    if (mode != "wal")
      return make_error(Errc::store_error,
                        "cannot switch the instance store " + path_ +
                            " to WAL mode (SQLite answered journal_mode '" + mode +
                            "'); put the store on a local file system that supports shared-memory locking");
  }
  // FULL: a commit is on disk (the WAL is fsynced) before it returns, so the
  // "record first" rule holds across a power loss too (docs/store.md).
  if (auto st = exec("PRAGMA synchronous = FULL", "setting synchronous = FULL"); !st.ok()) return st;
  if (auto st = exec("PRAGMA foreign_keys = ON", "enabling foreign keys"); !st.ok()) return st;
  if (auto st = migrate(); !st.ok()) return st;
  opening_ = false;
  return {};
}

Status SqliteStore::check_file() {
  // quick_check reads every page: a garbage or truncated file fails here
  // (SQLITE_NOTADB / SQLITE_CORRUPT, or a list of problems).
  {
    auto qc = prepare("PRAGMA quick_check");
    if (!qc.ok()) return qc.error();
    std::string problems;
    int rc;
    int n = 0;
    while ((rc = qc->step()) == SQLITE_ROW) {
      std::string line = qc->text(0);
      if (line == "ok") continue;
      if (n++ < 3) problems += (problems.empty() ? "" : "; ") + line;
    }
    if (rc != SQLITE_DONE) return failure(rc, "checking the database (PRAGMA quick_check)");
    if (!problems.empty()) return not_a_virtcap_database("PRAGMA quick_check: " + problems);
  }

  auto single_int = [this](const char* sql, std::int64_t& out) -> Status {
    mu_.assert_held();  // called below, in check_file
    auto st = prepare(sql);
    if (!st.ok()) return st.error();
    const int rc = st->step();
    if (rc != SQLITE_ROW) return failure(rc, std::string("reading ") + sql);
    out = st->int64(0);
    return {};
  };
  std::int64_t app_id = 0, version = 0, objects = 0;
  if (auto st = single_int("PRAGMA application_id", app_id); !st.ok()) return st;
  if (auto st = single_int("PRAGMA user_version", version); !st.ok()) return st;
  if (auto st = single_int("SELECT count(*) FROM sqlite_master", objects); !st.ok()) return st;

  if (app_id != kApplicationId) {
    if (app_id != 0)
      return not_a_virtcap_database("its application_id is " + hex(app_id) + ", virtcap's is " +
                                    hex(kApplicationId));
    if (objects != 0 || version != 0)
      return not_a_virtcap_database("it is an SQLite database of another application: it has " +
                                    std::to_string(objects) + " schema objects and user_version " +
                                    std::to_string(version) + " but no virtcap application_id");
  }
  if (version > kLatestVersion)
    return make_error(
        Errc::store_error,
        "the instance store " + path_ + " has schema version " + std::to_string(version) +
            ", newer than this virtcap knows (" + std::to_string(kLatestVersion) +
            "); it was written by a newer virtcap and was left untouched (virtcap never downgrades a "
            "store) — run the newer virtcap, or restore a backup taken before the upgrade");
  return {};
}

Status SqliteStore::migrate() {
  for (;;) {
    // The write lock is taken even when there is nothing to migrate: a store
    // another process holds locked is refused at open, not at the first write.
    Txn txn(*this);
    if (auto st = txn.begin_write(); !st.ok()) return st;
    std::int64_t version = 0;
    {
      auto uv = prepare("PRAGMA user_version");
      if (!uv.ok()) return uv.error();
      const int rc = uv->step();
      if (rc != SQLITE_ROW) return failure(rc, "reading PRAGMA user_version");
      version = uv->int64(0);
    }
    if (version > kLatestVersion)  // another, newer virtcap migrated it meanwhile
      return make_error(Errc::store_error, "the instance store " + path_ + " has schema version " +
                                               std::to_string(version) + ", newer than this virtcap knows (" +
                                               std::to_string(kLatestVersion) + "); run the newer virtcap");
    if (version == kLatestVersion) return txn.commit();

    const Migration& m = kMigrations[version];
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, m.sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      Error e =
          make_error(Errc::store_error, "migrating the instance store " + path_ + " to schema version " +
                                            std::to_string(m.version) + " (" + m.description +
                                            ") failed: " + (err != nullptr ? err : sqlite3_errstr(rc)) +
                                            "; the store was left at version " + std::to_string(version));
      e.backend_code = rc;
      sqlite3_free(err);
      return e;
    }
    // PRAGMAs take no bound parameters; both numbers are this binary's own
    // constants, never input.
    if (auto st =
            exec("PRAGMA application_id = " + std::to_string(kApplicationId), "setting the application_id");
        !st.ok())
      return st;
    if (auto st = exec("PRAGMA user_version = " + std::to_string(m.version), "setting the schema version");
        !st.ok())
      return st;
    if (auto st = txn.commit(); !st.ok()) return st;
  }
}

}  // namespace virtcap::store
