#include "fleet/sql.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "fleet/model.h"

namespace virtcap::fleet {

namespace {

std::string to_text(const SqlValue& v) {
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", *d);
    return buf;
  }
  return std::get<std::string>(v);
}

// "$1" -> "?1": SQLite's numbered parameter syntax.
std::string sqlite_params(std::string_view sql) {
  std::string out(sql);
  for (auto& c : out)
    if (c == '$') c = '?';
  return out;
}

class SqliteConn final : public SqlConn {
 public:
  SqliteConn(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteConn() override {
    for (auto& [sql, s] : stmts_) sqlite3_finalize(s);
    sqlite3_close_v2(db_);
  }
  Dialect dialect() const override { return Dialect::sqlite; }
  Status begin_write() override {
    auto r = exec("BEGIN IMMEDIATE", {});
    return r.ok() ? Status{} : Status(r.error());
  }
  Status begin_read() override {
    auto r = exec("BEGIN", {});
    return r.ok() ? Status{} : Status(r.error());
  }
  Status notify(std::string_view, std::string_view) override { return {}; }

  Result<SqlResult> exec(std::string_view sql, const std::vector<SqlValue>& params) override {
    auto stmt = prepare(sql);
    if (!stmt.ok()) return stmt.error();
    sqlite3_stmt* s = *stmt;
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{s};
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int at = static_cast<int>(i + 1);
      int rc = SQLITE_OK;
      if (const auto* v = std::get_if<std::int64_t>(&params[i]))
        rc = sqlite3_bind_int64(s, at, *v);
      else if (const auto* d = std::get_if<double>(&params[i]))
        rc = sqlite3_bind_double(s, at, *d);
      else {
        const auto& t = std::get<std::string>(params[i]);
        rc = sqlite3_bind_text(s, at, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) return failure(rc, sql);
    }
    SqlResult out;
    const int cols = sqlite3_column_count(s);
    while (true) {
      const int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return failure(rc, sql);
      auto& row = out.rows.emplace_back();
      for (int c = 0; c < cols; ++c) {
        if (sqlite3_column_type(s, c) ==
            SQLITE_FLOAT) {  // every digit: the value read back is the one stored
          row.push_back(to_text(sqlite3_column_double(s, c)));
          continue;
        }
        const auto* p = sqlite3_column_text(s, c);
        row.emplace_back(p ? reinterpret_cast<const char*>(p) : "",
                         static_cast<std::size_t>(sqlite3_column_bytes(s, c)));
      }
    }
    out.affected = sqlite3_stmt_readonly(s) ? 0 : sqlite3_changes(db_);
    return out;
  }

 private:
  Result<sqlite3_stmt*> prepare(std::string_view sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) return it->second;
    const std::string text = sqlite_params(sql);
    sqlite3_stmt* s = nullptr;
    const int rc = sqlite3_prepare_v3(db_, text.c_str(), static_cast<int>(text.size()),
                                      SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(s);
      return failure(rc, sql);
    }
    stmts_.emplace(std::string(sql), s);
    return s;
  }

  Error failure(int rc, std::string_view sql) const {
    const std::string msg = sqlite3_errmsg(db_);
    Errc code = Errc::store_error;
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) code = Errc::already_exists;
    Error e =
        make_error(code, "fleet database " + path_ + ": " + msg +
                             ((rc & 0xff) == SQLITE_BUSY ? " (another process holds the write lock)" : "") +
                             " (in: " + std::string(sql.substr(0, 60)) + ")");
    e.backend_code = rc;
    return e;
  }

  sqlite3* db_;
  std::string path_;
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_;
};

std::string trimmed(std::string msg) {
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

void quiet_notices(void*, const char*) {}

// What every session needs once connected (again).
bool pg_session_setup(PGconn* c, std::string& error) {
  PQsetNoticeProcessor(c, quiet_notices, nullptr);
  PGresult* r = PQexec(c, "SET client_min_messages = warning");
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) error = trimmed(PQerrorMessage(c));
  PQclear(r);
  return ok;
}

class PgConn final : public SqlConn {
 public:
  PgConn(PGconn* c, std::shared_ptr<DbHealth> health) : c_(c), health_(std::move(health)) {}
  ~PgConn() override { PQfinish(c_); }
  Dialect dialect() const override { return Dialect::postgresql; }
  Status begin_write() override {
    auto r = exec("BEGIN", {});
    return r.ok() ? Status{} : Status(r.error());
  }
  Status begin_read() override {
    auto r = exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {});
    return r.ok() ? Status{} : Status(r.error());
  }
  Status notify(std::string_view channel, std::string_view payload) override {
    auto r = exec("SELECT pg_notify($1, $2)", {std::string(channel), std::string(payload)});
    return r.ok() ? Status{} : Status(r.error());
  }

  Result<SqlResult> exec(std::string_view sql, const std::vector<SqlValue>& params) override {
    // A connection left dead by an earlier failure is reset first, when the
    // back-off allows (else: unavailable at once, no network wait).
    if (PQstatus(c_) == CONNECTION_BAD)
      if (auto st = reconnect(true); !st.ok()) return st.error();
    const bool outside_transaction = PQtransactionStatus(c_) == PQTRANS_IDLE;
    auto r = exec_once(sql, params);
    if (r.ok() || PQstatus(c_) != CONNECTION_BAD) return r;
    // The connection was lost during this statement (server restarted, or
    // the network cut): reset once at once, without waiting for the back-off.
    const std::string lost = r.error().message;
    if (auto st = reconnect(false); !st.ok()) return st.error();
    if (outside_transaction && (sql.starts_with("BEGIN") || sql.starts_with("SELECT")))
      return exec_once(sql, params);  // changed nothing: safe to send again
    return make_error(Errc::store_unavailable,
                      "the connection to the fleet database was lost during a transaction (" + lost +
                          "); it was reconnected, but this write may not have been made: retry it");
  }

 private:
  // PQreset, gated by the back-off when `gated`; reports to the health.
  Status reconnect(bool gated) {
    if (gated && !health_->claim_attempt()) return unavailable();
    PQreset(c_);
    std::string error;
    if (PQstatus(c_) != CONNECTION_OK)
      error = trimmed(PQerrorMessage(c_));
    else if (pg_session_setup(c_, error)) {
      health_->reached();
      return {};
    }
    health_->failed(error.empty() ? "connection refused" : error);
    return unavailable();
  }

  Error unavailable() const {
    const auto d = health_->down();
    const auto for_s = d ? std::chrono::duration<double>(DbHealth::Clock::now() - d->since).count() : 0.0;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", for_s);
    return make_error(Errc::store_unavailable, "the fleet database (PostgreSQL) is unreachable (for " +
                                                   std::string(buf) +
                                                   " s: " + (d ? d->reason : std::string("reconnecting")) +
                                                   "); reconnecting with back-off: retry later");
  }

  Result<SqlResult> exec_once(std::string_view sql, const std::vector<SqlValue>& params) {
    std::vector<std::string> text;
    text.reserve(params.size());
    for (const auto& p : params) text.push_back(to_text(p));
    std::vector<const char*> values;
    for (const auto& t : text) values.push_back(t.c_str());
    const std::string query(sql);
    PGresult* res = PQexecParams(c_, query.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                 nullptr, nullptr, 0);
    struct Clear {
      PGresult* r;
      ~Clear() { PQclear(r); }
    } clear{res};
    const auto status = PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return failure(res, sql);
    SqlResult out;
    const int rows = PQntuples(res), cols = PQnfields(res);
    out.rows.resize(static_cast<std::size_t>(rows));
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        out.rows[static_cast<std::size_t>(r)].emplace_back(PQgetvalue(res, r, c),
                                                           static_cast<std::size_t>(PQgetlength(res, r, c)));
    out.affected = std::atoll(PQcmdTuples(res));
    return out;
  }

  Error failure(PGresult* res, std::string_view sql) const {
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = state ? state : "";
    Errc code = Errc::store_error;
    if (sqlstate == "23505") code = Errc::already_exists;
    if (sqlstate == "40001" || sqlstate == "40P01") code = Errc::conflict;
    std::string msg = trimmed(res ? PQresultErrorMessage(res) : PQerrorMessage(c_));
    if (msg.empty()) msg = trimmed(PQerrorMessage(c_));
    return make_error(code, "fleet database (PostgreSQL " + sqlstate + "): " + msg +
                                " (in: " + std::string(sql.substr(0, 60)) + ")");
  }

  PGconn* c_;
  std::shared_ptr<DbHealth> health_;
};

}  // namespace

std::optional<DbHealth::Down> DbHealth::down() const {
  MutexLock lock(mu_);
  return down_;
}

bool DbHealth::claim_attempt() {
  MutexLock lock(mu_);
  if (!down_) return true;
  const auto now = Clock::now();
  if (now < next_) return false;
  next_ = now + backoff_;  // the others wait while this attempt runs
  return true;
}

std::chrono::milliseconds DbHealth::retry_in() const {
  MutexLock lock(mu_);
  if (!down_) return std::chrono::milliseconds(0);
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::ceil<std::chrono::milliseconds>(next_ - Clock::now()));
}

void DbHealth::failed(std::string reason) {
  MutexLock lock(mu_);
  const auto now = Clock::now();
  if (!down_) {
    down_ = Down{now, std::move(reason)};
    backoff_ = kReconnectFirst;
  } else {
    down_->reason = std::move(reason);
  }
  next_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, kReconnectMax);
}

void DbHealth::reached() {
  MutexLock lock(mu_);
  if (down_) ++recoveries_;
  down_.reset();
  backoff_ = kReconnectFirst;
}

std::uint64_t DbHealth::recoveries() const {
  MutexLock lock(mu_);
  return recoveries_;
}

PgConnectParams pg_connect_params(const std::string& conninfo) {
  static const char* const kKeywords[] = {"connect_timeout",     "keepalives",       "keepalives_idle",
                                          "keepalives_interval", "keepalives_count", "tcp_user_timeout"};
  static const char* const kValues[] = {"5", "1", "10", "5", "3", "15000"};
  PgConnectParams p;
  p.keywords.assign(std::begin(kKeywords), std::end(kKeywords));
  p.values.assign(std::begin(kValues), std::end(kValues));
  p.keywords.push_back("dbname");  // expanded (expand_dbname = 1): the URL's own settings win
  p.values.push_back(conninfo.c_str());
  p.keywords.push_back(nullptr);
  p.values.push_back(nullptr);
  return p;
}

Result<std::unique_ptr<SqlConn>> open_sqlite(const std::string& path,
                                             std::chrono::milliseconds busy_timeout) {
  if (path.empty()) return make_error(Errc::invalid_argument, "the fleet database path is empty");
  const auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    return make_error(Errc::io_error,
                      "the directory of the fleet database " + path +
                          " does not exist: create it (mode 0700) or change the database path");
  // A new database is created owner-only; an existing file is untouched.
  if (int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600); fd >= 0) ::close(fd);
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Error e = make_error(Errc::store_error, "cannot open the fleet database " + path + ": " +
                                                (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return e;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(
      db, static_cast<int>(std::min<std::chrono::milliseconds::rep>(busy_timeout.count(), INT_MAX)));
  std::unique_ptr<SqlConn> conn = std::make_unique<SqliteConn>(db, path);
  for (const char* pragma :
       {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"})
    if (auto r = conn->exec(pragma, {}); !r.ok()) return r.error();
  return conn;
}

Result<std::unique_ptr<SqlConn>> open_postgres(const std::string& conninfo,
                                               std::shared_ptr<DbHealth> health) {
  const auto params = pg_connect_params(conninfo);
  PGconn* c = PQconnectdbParams(params.keywords.data(), params.values.data(), 1);
  if (c == nullptr) return make_error(Errc::store_error, "cannot allocate a PostgreSQL connection");
  std::string msg;
  if (PQstatus(c) != CONNECTION_OK || !pg_session_setup(c, msg)) {
    if (msg.empty()) msg = trimmed(PQerrorMessage(c));
    PQfinish(c);
    return make_error(Errc::store_error, "cannot connect to the fleet database (PostgreSQL): " + msg +
                                             ": check the database URL and that the server runs");
  }
  return std::unique_ptr<SqlConn>(
      std::make_unique<PgConn>(c, health ? std::move(health) : std::make_shared<DbHealth>()));
}

Transaction::~Transaction() {
  if (open_) (void)c_.exec("ROLLBACK", {});
}

Status Transaction::begin() {
  if (auto st = c_.begin_write(); !st.ok()) return st;
  open_ = true;
  return {};
}

Status Transaction::begin_read() {
  if (auto st = c_.begin_read(); !st.ok()) return st;
  open_ = true;
  return {};
}

Status Transaction::commit() {
  auto r = c_.exec("COMMIT", {});
  if (!r.ok()) {
    (void)c_.exec("ROLLBACK", {});
    open_ = false;
    return r.error();
  }
  open_ = false;
  return {};
}

ConnPool::ConnPool(std::vector<std::unique_ptr<SqlConn>> conns, std::shared_ptr<DbHealth> health)
    : idle_(std::move(conns)),
      dialect_(idle_.empty() ? Dialect::sqlite : idle_.front()->dialect()),
      health_(std::move(health)) {}

ConnPool::Lease ConnPool::acquire() {
  MutexLock lock(mu_);
  while (idle_.empty()) cv_.wait(mu_);
  auto c = std::move(idle_.back());
  idle_.pop_back();
  return Lease(*this, std::move(c));
}

ConnPool::Lease::~Lease() {
  if (!c_) return;
  MutexLock lock(pool_->mu_);
  pool_->idle_.push_back(std::move(c_));
  pool_->cv_.notify_one();
}

}  // namespace virtcap::fleet
