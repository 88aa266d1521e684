// The small SQL layer the fleet store is written on: one connection type per
// backend (SQLite, PostgreSQL via libpq), the same SQL text for both
// (parameters are written $1, $2, ...), and a pool.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/mutex.h"
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

// What the connections to one database know of whether it can be reached,
// shared by a pool's connections and the LISTEN connection. A connection
// found dead is reset at once; when that fails the database is "down" and
// further reconnects are spaced by a bounded exponential back-off
// (kReconnectFirst doubling up to kReconnectMax), so a stopped server costs
// one connect attempt per step, not one per request.
class DbHealth {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kReconnectFirst{100};
  static constexpr std::chrono::milliseconds kReconnectMax{2000};
  struct Down {
    Clock::time_point since;  // the first failed reconnect of this outage
    std::string reason;       // the latest failure, as libpq words it
  };
  // nullopt while the database is reachable.
  std::optional<Down> down() const;
  // Whether a reconnect may be tried now: always while up; while down once
  // per back-off step (the caller that gets true makes the attempt).
  bool claim_attempt();
  // How long until the next attempt may be made (zero while up).
  std::chrono::milliseconds retry_in() const;
  // A reconnect failed: down from now (or still), the back-off doubles.
  void failed(std::string reason);
  // A connection is up: the outage, if any, is over.
  void reached();
  // Outages ended (successful reconnects after a failed one).
  std::uint64_t recoveries() const;

 private:
  mutable Mutex mu_;
  std::optional<Down> down_ GUARDED_BY(mu_);
  Clock::time_point next_ GUARDED_BY(mu_){};
  std::chrono::milliseconds backoff_ GUARDED_BY(mu_) = kReconnectFirst;
  std::uint64_t recoveries_ GUARDED_BY(mu_) = 0;
};

// The libpq connection parameters every fleet connection uses unless the URL
// sets them: connect_timeout=5, TCP keepalives (idle 10 s, every 5 s, 3
// probes) and tcp_user_timeout=15000, so no thread waits for ever on a dead
// server or a cut network. `conninfo` (a URI or key=value string) is
// expanded after them, so its own settings win. Returns PQconnectdbParams's
// keyword and value arrays (nullptr-terminated, pointing into the returned
// storage and `conninfo`).
struct PgConnectParams {
  std::vector<const char*> keywords, values;
};
PgConnectParams pg_connect_params(const std::string& conninfo);

// SQLite file at `path` (created 0600 with its parent 0700 if missing).
Result<std::unique_ptr<SqlConn>> open_sqlite(const std::string& path, std::chrono::milliseconds busy_timeout);
// PostgreSQL connection by libpq connection string or URI. It reconnects by
// itself (see DbHealth): a statement on a connection found dead is reset
// first; a BEGIN or a SELECT outside a transaction that fails because the
// connection was lost is retried once on the new connection (it cannot have
// changed anything). While the database cannot be reached, statements fail
// at once with Errc::store_unavailable. `health` is shared with the other
// connections to the same database (a new one when null).
Result<std::unique_ptr<SqlConn>> open_postgres(const std::string& conninfo,
                                               std::shared_ptr<DbHealth> health = nullptr);

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
  // `health`: what the connections report (null for SQLite).
  ConnPool(std::vector<std::unique_ptr<SqlConn>> conns, std::shared_ptr<DbHealth> health);
  Lease acquire();
  Dialect dialect() const { return dialect_; }
  const std::shared_ptr<DbHealth>& health() const { return health_; }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<std::unique_ptr<SqlConn>> idle_ GUARDED_BY(mu_);
  Dialect dialect_;
  std::shared_ptr<DbHealth> health_;
};

}  // namespace virtcap::fleet
