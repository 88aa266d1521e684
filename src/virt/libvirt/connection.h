// One libvirt connection, kept alive: opened at init_host, watched by a close
// callback (and keepalive on remote URIs), and reopened with bounded
// exponential back-off when the hypervisor goes away. While it is gone every
// call fails fast with Errc::hypervisor_unavailable.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <stop_token>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "virtcap/error.h"

namespace virtcap::libvirt {

// libvirt's last error on this thread as a typed Error (code
// driver_error, backend_code = virErrorNumber), prefixed with `what`.
Error last_error(const std::string& what);

// Process-wide libvirt setup, done once: silence libvirt's default stderr
// printer, register and run the default event loop (needed for close
// callbacks and keepalive).
void ensure_libvirt_initialised();

class Connection {
 public:
  Connection(std::string uri, int max_backoff_seconds);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The first open. Failure is returned (the caller decides to exit).
  Status open();
  const std::string& uri() const { return uri_; }
  bool connected() const { return alive_.load(); }
  // Why the connection is down, or "" when it is up.
  std::string unavailable_reason() const;
  std::uint64_t reconnects() const { return reconnects_.load(); }

  // Runs fn(virConnectPtr) -> Result<T> with the connection held. When the
  // connection is down: hypervisor_unavailable at once. When fn fails and the
  // connection turns out to be dead: hypervisor_unavailable, and a reconnect
  // starts.
  template <class F>
  auto with(F&& fn) -> decltype(fn(virConnectPtr{}));

  // Blocks until the connection is up (alive = true) or down (false), or the
  // timeout passes; returns whether the state was reached. For tests and for
  // callers that prefer to wait out a reconnect.
  bool wait_for(bool alive, std::chrono::milliseconds timeout);

  // Marks the connection dead (close callback, or a failed liveness check).
  void mark_dead(const std::string& reason);

 private:
  static void on_close(virConnectPtr conn, int reason, void* opaque);
  Error unavailable() const;
  void reconnect_loop(std::stop_token st);
  virConnectPtr open_raw(std::string& error);

  std::string uri_;
  int max_backoff_seconds_;
  mutable SharedMutex conn_mu_;  // shared: calls; exclusive: swap
  virConnectPtr conn_ GUARDED_BY(conn_mu_) = nullptr;
  std::atomic<bool> alive_{false};
  std::atomic<std::uint64_t> reconnects_{0};
  mutable Mutex state_mu_;
  CondVar state_cv_;
  std::string down_reason_ GUARDED_BY(state_mu_);
  std::jthread reconnector_;
};

template <class F>
auto Connection::with(F&& fn) -> decltype(fn(virConnectPtr{})) {
  ReaderLock lock(conn_mu_);
  if (!alive_.load() || conn_ == nullptr) return unavailable();
  auto result = fn(conn_);
  if (!result.ok() && virConnectIsAlive(conn_) != 1) {
    lock.unlock();
    mark_dead("connection lost during a call: " + result.error().message);
    return unavailable();
  }
  return result;
}

}  // namespace virtcap::libvirt
