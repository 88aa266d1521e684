// The small SQL layer the fleet store is written on: one connection type per
// backend (SQLite, PostgreSQL via libpq), the same SQL text for both
// (parameters are written $1, $2, ...), and a pool.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "virtcap/error.h"

namespace virtcap::fleet {

enum class Dialect : std::uint8_t { sqlite, postgresql };

using SqlValue = std::variant<std::int64_t, double, std::string>;

struct SqlResult {
  std::vector<std::vector<std::string>> rows;  // text of each column; NULL reads as ""
  std::int64_t affected = 0;                   // rows changed by INSERT/UPDATE/DELETE
};

class SqlConn {
 public:
  virtual ~SqlConn() = default;
  virtual Dialect dialect() const = 0;
  // One statement. A unique-constraint violation is Errc::already_exists, a
  // lock/serialisation failure Errc::conflict, anything else store_error.
  virtual Result<SqlResult> exec(std::string_view sql, const std::vector<SqlValue>& params = {}) = 0;
  // BEGIN that takes the write lock up front where the backend needs it.
  virtual Status begin_write() = 0;
  // BEGIN of a read-only transaction that sees one snapshot throughout.
  virtual Status begin_read() = 0;
  // Queues a notification for `channel` with `payload`, sent at COMMIT
  // (PostgreSQL); a no-op on SQLite (one process).
  virtual Status notify(std::string_view channel, std::string_view payload) = 0;
};

// SQLite file at `path` (created 0600 with its parent 0700 if missing).
Result<std::unique_ptr<SqlConn>> open_sqlite(const std::string& path, std::chrono::milliseconds busy_timeout);
// PostgreSQL connection by libpq connection string or URI.
Result<std::unique_ptr<SqlConn>> open_postgres(const std::string& conninfo);

// Rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(SqlConn& c) : c_(c) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Status begin();       // for writing
  Status begin_read();  // one consistent snapshot
  Status commit();

 private:
  SqlConn& c_;
  bool open_ = false;
};

// A fixed set of connections; acquire() waits for a free one.
class ConnPool {
 public:
  class Lease {
   public:
    Lease(ConnPool& pool, std::unique_ptr<SqlConn> c) : pool_(&pool), c_(std::move(c)) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    SqlConn& operator*() { return *c_; }
    SqlConn* operator->() { return c_.get(); }

   private:
    ConnPool* pool_;
    std::unique_ptr<SqlConn> c_;
  };
  explicit ConnPool(std::vector<std::unique_ptr<SqlConn>> conns);
  Lease acquire();
  Dialect dialect() const { return dialect_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<SqlConn>> idle_;
  Dialect dialect_;
};

}  // namespace virtcap::fleet
