// Fills a virtcap SQLite store with many instance rows in one transaction
// (creating the schema with SqliteStore first): thousands of rows in
// milliseconds, where one create_instance per row pays an fsync each.
// Used by integration tests and benchmarks before the agent opens the store.
#pragma once

#include <sqlite3.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "store/sqlite/sqlite_store.h"

namespace virtcap::testing {

inline void seed_store(const std::string& db, const std::vector<InstanceRecord>& records) {
  if (auto s = store::SqliteStore::open(db); !s.ok()) throw std::runtime_error(s.error().message);
  sqlite3* h = nullptr;
  sqlite3_stmt* st = nullptr;
  auto check = [&](bool ok, const char* what) {
    if (ok) return;
    const std::string msg = std::string(what) + ": " + (h ? sqlite3_errmsg(h) : "cannot open " + db);
    sqlite3_finalize(st);
    sqlite3_close(h);
    throw std::runtime_error(msg);
  };
  check(sqlite3_open(db.c_str(), &h) == SQLITE_OK, "open");
  check(sqlite3_exec(h, "BEGIN", nullptr, nullptr, nullptr) == SQLITE_OK, "BEGIN");
  check(sqlite3_prepare_v2(h,
                           "INSERT INTO instances (uuid, name, host, image_id, memory_mb, vcpus, vm_state, "
                           "task_state, created_at, updated_at, deleted_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, nullptr) == SQLITE_OK,
        "prepare");
  for (const auto& r : records) {
    int i = 1;
    for (const std::string* s : {&r.uuid, &r.name, &r.host, &r.image_id})
      sqlite3_bind_text(st, i++, s->c_str(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
    sqlite3_bind_int(st, i++, r.memory_mb);
    sqlite3_bind_int(st, i++, r.vcpus);
    for (std::string_view s : {to_string(r.vm_state), to_string(r.task_state)})
      sqlite3_bind_text(st, i++, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    for (std::int64_t v : {r.created_at, r.updated_at, r.deleted_at}) sqlite3_bind_int64(st, i++, v);
    check(sqlite3_step(st) == SQLITE_DONE, "insert");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  st = nullptr;
  check(sqlite3_exec(h, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK, "COMMIT");
  sqlite3_close(h);
}

}  // namespace virtcap::testing
