#include "fleet/fleet.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace virtcap::fleet {

Result<std::unique_ptr<Fleet>> Fleet::open(const FleetOptions& options) {
  if (options.host_down_after.count() <= 0)
    return make_error(Errc::invalid_argument, "host_down_after must be positive");
  auto store = open_fleet_store(options.database_url, options.store);
  if (!store.ok()) return store.error();
  std::unique_ptr<Fleet> fleet(new Fleet(std::move(*store), options.host_down_after));
  std::unique_ptr<PgListener> listener;
  if (options.listen && fleet->store_->dialect() == Dialect::postgresql) {
    // LISTEN before the load: a write committed after the load is notified.
    auto l = PgListener::open(fleet->store_->target(), {std::string(kNotifyChannel)});
    if (!l.ok()) return l.error();
    listener = std::move(*l);
  }
  if (auto st = fleet->rebuild(); !st.ok()) return st.error();
  if (listener) {
    {
      MutexLock lock(fleet->listener_mu_);
      fleet->listener_ = listener.get();
    }
    fleet->listener_thread_ =
        std::thread([f = fleet.get(), l = std::move(listener)]() mutable { f->listen_loop(std::move(l)); });
  }
  return fleet;
}

Fleet::~Fleet() {
  {
    MutexLock lock(listener_mu_);
    stop_ = true;
    if (listener_ != nullptr) listener_->interrupt();
  }
  stop_cv_.notify_all();
  if (listener_thread_.joinable()) listener_thread_.join();
}

void Fleet::set_listener(PgListener* l) {
  {
    MutexLock lock(listener_mu_);
    listener_ = l;
  }
  if (l == nullptr) mark_stale();
}

void Fleet::mark_stale() {
  MutexLock lock(listener_mu_);
  if (!stale_since_) stale_since_ = std::chrono::steady_clock::now();
}

void Fleet::pause(std::chrono::milliseconds d) {
  MutexLock lock(listener_mu_);
  // Not a synchronisation sleep: the back-off between reconnect attempts.
  stop_cv_.wait_for(listener_mu_, std::max(d, std::chrono::milliseconds(20)),
                    [this] { return stop_.load(); });
}

void Fleet::listen_loop(std::unique_ptr<PgListener> listener) {
  using namespace std::chrono_literals;
  const auto& health = store_->health();
  bool reload = false;
  while (!stop_) {
    if (!listener) {
      // Reconnect (with the back-off the pool's connections share), then
      // reload everything: notifications may have been missed meanwhile.
      if (health->claim_attempt()) {
        auto l = PgListener::open(store_->target(), {std::string(kNotifyChannel)});
        if (l.ok()) {
          listener = std::move(*l);
          set_listener(listener.get());
          health->reached();
          reload = true;
        } else {
          health->failed(l.error().message);
          spdlog::warn("{}", l.error().message);
        }
      }
      if (!listener) {
        pause(health->retry_in());
        continue;
      }
    }
    if (reload) {
      if (auto st = rebuild(); !st.ok()) {
        spdlog::warn("fleet index reload failed (retrying): {}", st.error().message);
        pause(std::max(health->retry_in(), std::chrono::milliseconds(DbHealth::kReconnectFirst)));
        continue;
      }
      reload = false;
      std::chrono::milliseconds stale{0};
      {
        MutexLock lock(listener_mu_);
        if (stale_since_)
          stale =
              std::chrono::ceil<std::chrono::milliseconds>(std::chrono::steady_clock::now() - *stale_since_);
        stale_since_.reset();
      }
      spdlog::info("fleet index reloaded from the database after {} ms behind; current again", stale.count());
    }
    auto batch = listener->wait(std::chrono::steady_clock::now() + 1s);
    if (batch.ok()) {
      if (!batch->empty())
        if (auto st = apply_notifications(*batch); !st.ok()) {
          spdlog::warn("fleet index refresh failed: {}; reloading", st.error().message);
          reload = true;  // a notification not applied: only a full reload catches up
          mark_stale();
        }
      continue;
    }
    spdlog::warn("{}", batch.error().message);
    set_listener(nullptr);
    listener.reset();
  }
}

Freshness Fleet::freshness() const {
  const auto now = std::chrono::steady_clock::now();
  Freshness f;
  std::optional<std::chrono::steady_clock::time_point> since;
  {
    MutexLock lock(listener_mu_);
    since = stale_since_;
  }
  if (const auto& h = store_->health()) {
    f.database_recoveries = h->recoveries();
    f.database_down = h->down();
    if (f.database_down) {
      f.database_down_for = std::chrono::ceil<std::chrono::milliseconds>(now - f.database_down->since);
      f.retry_in = h->retry_in();
      if (!listener_thread_.joinable() && !since) since = f.database_down->since;  // no LISTEN to tell
    }
  }
  if (since) {
    f.current = false;
    f.age = std::chrono::ceil<std::chrono::milliseconds>(now - *since);
  }
  return f;
}

namespace {
// How long the listener waits for this process's write of a host to be
// applied before it reads a notification of that host anyway.
constexpr auto kAwaitOwnWrite = std::chrono::seconds(2);
}  // namespace

Status Fleet::apply_notifications(const std::vector<Notification>& batch) {
  std::set<std::string> hosts;
  for (const auto& n : batch) {
    if (n.payload == kNotifyEverything) {
      notified_++;
      return rebuild();
    }
    Notice notice = parse_notice(n.payload);
    // This process's own write was applied as it answered: no re-read of
    // what the index already holds (a later notice of the host still counts).
    if (already_held(notice, std::chrono::steady_clock::now() + kAwaitOwnWrite)) {
      notices_skipped_++;
      continue;
    }
    hosts.insert(std::move(notice.host));
  }
  if (hosts.empty()) return {};
  for (const auto& h : hosts)
    if (auto st = refresh_host(h); !st.ok()) return st;
  notified_++;
  return {};
}

void Fleet::signal_changed() {
  { MutexLock lock(changed_mu_); }  // a waiter is either before its check or waiting
  changed_cv_.notify_all();
}

Status Fleet::rebuild() {
  {
    MutexLock lock(refresh_mu_);
    // Built off to the side from the database a page at a time: the peak is
    // the old index, the new one and one page, never the whole table as rows.
    HostIndex fresh(index_.host_down_after());
    auto st = store_->scan_hosts(kScanPageHosts, [&fresh](std::vector<HostRecord>& page) {
      for (const auto& r : page) fresh.apply(r);
      return Status{};
    });
    if (!st.ok()) return st;
    index_.replace_with(fresh);
    signal_changed();
  }  // the old contents, now in `fresh`, are freed here
  return_freed_memory();
  return {};
}

Status Fleet::refresh_host(std::string_view host) {
  MutexLock lock(refresh_mu_);
  auto rec = store_->get_host(host);
  if (!rec.ok()) return rec.error();
  if (!*rec) {
    index_.remove(host);
    signal_changed();
    return {};
  }
  // Serialised reads of the store are never older than what is indexed; a
  // lower generation means the host was deleted and registered again.
  if (!index_.apply(**rec)) {
    index_.remove(host);
    index_.apply(**rec);
  }
  signal_changed();
  return {};
}

Status Fleet::apply_written(const HostRecord& rec) {
  {
    MutexLock lock(refresh_mu_);
    if (index_.apply_written(rec) != HostIndex::Applied::older_generation) {
      signal_changed();
      return {};
    }
  }
  return refresh_host(rec.name);  // only the database can tell a later write from a re-registration
}

bool Fleet::wait_for_index(const std::function<bool(const HostIndex&)>& pred,
                           std::chrono::steady_clock::time_point deadline) {
  MutexLock lock(changed_mu_);
  while (!pred(index_))
    if (!changed_cv_.wait_until(changed_mu_, deadline)) return pred(index_);
  return true;
}

bool Fleet::already_held(const Notice& notice, std::chrono::steady_clock::time_point deadline) {
  if (!notice.generation) return false;  // a delete, or a payload of an earlier version: always read
  {
    // The notification of this process's write can arrive before the
    // writing thread has applied the write: wait for it (never past the
    // deadline; a write stuck in the database is then read like any other).
    MutexLock lock(writes_mu_);
    while (writing_.find(notice.host) != writing_.end())
      if (!writes_cv_.wait_until(writes_mu_, deadline)) break;
  }
  return index_.holds(notice.host, *notice.generation, *notice.last_seen_ms);
}

template <class Write>
Result<HostRecord> Fleet::write_host(std::string_view host, Write&& write) {
  {
    MutexLock lock(writes_mu_);
    ++writing_[std::string(host)];
  }
  auto rec = write();
  if (rec.ok())
    if (auto st = apply_written(*rec); !st.ok()) rec = st.error();
  {
    MutexLock lock(writes_mu_);
    if (auto it = writing_.find(host); --it->second == 0) writing_.erase(it);
  }
  writes_cv_.notify_all();
  return rec;
}

Result<HostRecord> Fleet::report(const AgentReport& r, std::optional<std::int64_t> expected) {
  return write_host(r.name, [&] { return store_->report(r, expected); });
}

Result<HostRecord> Fleet::add_operator_trait(std::string_view host, std::string_view trait,
                                             std::int64_t expected) {
  return write_host(host, [&] { return store_->add_operator_trait(host, trait, expected); });
}

Result<HostRecord> Fleet::remove_operator_trait(std::string_view host, std::string_view trait,
                                                std::int64_t expected) {
  return write_host(host, [&] { return store_->remove_operator_trait(host, trait, expected); });
}

Status Fleet::delete_host(std::string_view host, std::optional<std::int64_t> expected) {
  if (auto st = store_->delete_host(host, expected); !st.ok()) return st;
  return refresh_host(host);
}

Result<Drift> Fleet::check_drift() {
  Drift d;
  HostIndex::Seen seen;
  auto st = store_->scan_hosts(kScanPageHosts, [&](std::vector<HostRecord>& page) {
    d.db_hosts += page.size();
    for (auto& name : index_.compare(page, seen)) d.hosts.push_back(std::move(name));
    return Status{};
  });
  if (!st.ok()) return st.error();
  for (auto& name : index_.unseen(seen)) d.hosts.push_back(std::move(name));
  d.index_hosts = index_.host_count();
  std::sort(d.hosts.begin(), d.hosts.end());
  d.hosts.erase(std::unique(d.hosts.begin(), d.hosts.end()), d.hosts.end());
  return_freed_memory();
  if (!d.hosts.empty())
    spdlog::warn("fleet index drift: {} host(s) differ between the database and the index (first: {})",
                 d.hosts.size(), d.hosts.front());
  return d;
}

void Fleet::return_freed_memory() {
  // A scan frees many small blocks in the middle of the heap, which glibc
  // keeps; hand them back so the resident size follows the index, not the
  // scan's peak (docs/fleet.md, "Memory").
  malloc_trim(0);
}

}  // namespace virtcap::fleet
