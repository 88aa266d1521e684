// What the SQLite store's two files share: its prepared-statement and
// transaction wrappers. sqlite_schema.cpp holds the schema (migrations, the
// file checks at open); sqlite_store.cpp the reads and writes.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "store/sqlite/sqlite_store.h"

namespace virtcap::store {

// A cached prepared statement in use: reset and unbound when it goes away, so
// no statement keeps a read transaction open between calls.
class SqliteStore::Stmt {
 public:
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  Stmt(Stmt&& o) noexcept : s_(std::exchange(o.s_, nullptr)), bind_rc_(o.bind_rc_) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() { reset(); }

  void bind(int i, std::string_view v) {
    note(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  void bind(int i, std::int64_t v) { note(sqlite3_bind_int64(s_, i, v)); }
  // A failed bind is reported by the step, never run as a NULL.
  int step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(s_); }
  void reset() {
    if (s_ == nullptr) return;
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    s_ = nullptr;
  }

  std::string text(int col) const {
    const unsigned char* p = sqlite3_column_text(s_, col);
    if (p == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(p),
                       static_cast<std::size_t>(sqlite3_column_bytes(s_, col)));
  }
  // No copy: valid until the next step() or reset().
  std::string_view view(int col) const {
    const unsigned char* p = sqlite3_column_text(s_, col);
    if (p == nullptr) return {};
    return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, col))};
  }
  std::int64_t int64(int col) const { return sqlite3_column_int64(s_, col); }

 private:
  void note(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  sqlite3_stmt* s_;
  int bind_rc_ = SQLITE_OK;
};

// One transaction: rolled back if it goes away uncommitted. Made only with
// the store's mutex held (checked), and it lives in that scope, so its steps
// may assume the mutex held (clang cannot follow s_ back to the caller's mu_).
class SqliteStore::Txn {
 public:
  explicit Txn(SqliteStore& s) REQUIRES(s.mu_) : s_(s) {}
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (sqlite3_get_autocommit(s_.db_) == 0) sqlite3_exec(s_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  // BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
  // timeout), so a write never fails half-way for want of the lock.
  Status begin_write() { return exec("BEGIN IMMEDIATE", "taking the write lock"); }
  // A read snapshot across several statements.
  Status begin_read() { return exec("BEGIN", "starting a read transaction"); }
  Status commit() { return exec("COMMIT", "committing"); }

 private:
  Status exec(std::string_view sql, std::string_view doing) {
    s_.mu_.assert_held();
    return s_.exec(sql, doing);
  }
  SqliteStore& s_;
};

}  // namespace virtcap::store
