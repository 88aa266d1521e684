// The fleet core a fleet-service process runs: the store, the in-memory index
// rebuilt from it at open, and (on PostgreSQL) a LISTEN thread that refreshes
// the index when any replica writes. Every write goes to the store first, and
// the index is then refreshed from what the store holds; queries only read
// the index. See docs/fleet.md.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "fleet/index.h"
#include "fleet/pg_listener.h"
#include "fleet/query.h"
#include "fleet/store.h"

namespace virtcap::fleet {

struct FleetOptions {
  std::string database_url;                           // sqlite://PATH or postgresql://...
  std::chrono::milliseconds host_down_after{180000};  // [fleet_service] host_down_after
  StoreOptions store;
  bool listen = true;  // PostgreSQL: keep the index fresh from other replicas' writes
};

// Hosts on which the database and the index disagree (empty: none).
struct Drift {
  std::vector<std::string> hosts;
  std::size_t db_hosts = 0, index_hosts = 0;
};

// How current the index is, and whether the database can be reached
// (docs/fleet.md, "When the database is away").
struct Freshness {
  // False while the index may be missing changes: from the moment the LISTEN
  // connection was lost (or, without one, the database was found down) until
  // the index has been reloaded after the reconnect.
  bool current = true;
  std::chrono::milliseconds age{0};  // how long it has not been current (0 when it is)
  std::optional<DbHealth::Down> database_down;
  std::chrono::milliseconds database_down_for{0};
  std::chrono::milliseconds retry_in{0};  // until the next reconnect attempt
  std::uint64_t database_recoveries = 0;  // outages ended since start
};

class Fleet {
 public:
  static Result<std::unique_ptr<Fleet>> open(const FleetOptions& options);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Writes (see FleetStore for the rules); on success the index shows them.
  Result<HostRecord> report(const AgentReport& report,
                            std::optional<std::int64_t> expected_generation = std::nullopt);
  Result<HostRecord> add_operator_trait(std::string_view host, std::string_view trait,
                                        std::int64_t expected_generation);
  Result<HostRecord> remove_operator_trait(std::string_view host, std::string_view trait,
                                           std::int64_t expected_generation);
  Status delete_host(std::string_view host, std::optional<std::int64_t> expected_generation);

  Answer query(const Query& q, bool explain, std::int64_t now = now_ms()) const {
    return index_.query(q, now, explain);
  }
  Result<HostExplanation> explain_host(const Query& q, std::string_view host,
                                       std::int64_t now = now_ms()) const {
    return index_.explain_host(q, host, now);
  }

  // Reloads the index from the store.
  Status rebuild();
  // Re-reads one host from the store into the index (removes it if gone).
  Status refresh_host(std::string_view host);
  // Recounts: compares every host in the store with the index.
  Result<Drift> check_drift();
  // Hosts a rebuild or drift check reads from the database at a time.
  static constexpr std::size_t kScanPageHosts = 1000;

  Freshness freshness() const;

  FleetStore& store() { return *store_; }
  const HostIndex& index() const { return index_; }
  // Notification batches the LISTEN thread has applied (for tests).
  std::uint64_t refreshes_from_notifications() const { return notified_.load(); }
  // Notifications of a version the index already held (this replica's own
  // writes, mostly): not read again.
  std::uint64_t notifications_already_held() const { return notices_skipped_.load(); }
  // Waits until `pred(index)` holds, re-checking after every index change;
  // false when `deadline` passes first.
  bool wait_for_index(const std::function<bool(const HostIndex&)>& pred,
                      std::chrono::steady_clock::time_point deadline);

 private:
  Fleet(std::unique_ptr<FleetStore> store, std::chrono::milliseconds down_after)
      : store_(std::move(store)), index_(down_after) {}
  void listen_loop(std::unique_ptr<PgListener> listener);
  void pause(std::chrono::milliseconds d);  // until d passes or the destructor stops the loop
  void set_listener(PgListener* l);         // null: lost, the index may miss changes from now
  void mark_stale();
  Status apply_notifications(const std::vector<Notification>& batch);
  void signal_changed();
  // Puts a record this process has just written into the index without
  // reading it back (HostIndex::apply_written; a re-read when it cannot tell).
  Status apply_written(const HostRecord& rec);
  // A write of `host` (`write` runs it in the store) and its apply, with the
  // host marked in flight meanwhile: the listener waits for it before it
  // decides whether a notification is this write's own (already_held).
  template <class Write>
  Result<HostRecord> write_host(std::string_view host, Write&& write);
  // Whether the index holds this notice's version, once this process's
  // writes of the host in flight have been applied (at most `deadline`).
  bool already_held(const Notice& notice, std::chrono::steady_clock::time_point deadline);
  static void return_freed_memory();  // malloc_trim after a scan

  std::unique_ptr<FleetStore> store_;
  HostIndex index_;
  Mutex refresh_mu_;  // a read of the store and its apply to the index happen as one step
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> notified_{0};
  std::atomic<std::uint64_t> notices_skipped_{0};
  Mutex changed_mu_;
  CondVar changed_cv_;
  Mutex writes_mu_;
  CondVar writes_cv_;  // with writes_mu_: a write of this process was applied
  std::map<std::string, int, std::less<>> writing_ GUARDED_BY(writes_mu_);  // host -> writes in flight
  mutable Mutex listener_mu_;
  PgListener* listener_ GUARDED_BY(listener_mu_) = nullptr;  // to interrupt it
  CondVar stop_cv_;                                          // with listener_mu_: wakes a pause() at stop
  // Since when the index may miss changes.
  std::optional<std::chrono::steady_clock::time_point> stale_since_ GUARDED_BY(listener_mu_);
  std::thread listener_thread_;
};

}  // namespace virtcap::fleet
