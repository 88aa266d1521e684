#include "virt/libvirt/connection.h"

#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include <chrono>

namespace virtcap::libvirt {

namespace {

void quiet_error_handler(void*, virErrorPtr) {}  // errors are read with virGetLastError

void event_loop() {
  while (virEventRunDefaultImpl() == 0) {
  }
}

}  // namespace

Error last_error(const std::string& what) {
  virErrorPtr err = virGetLastError();
  Error e =
      make_error(Errc::driver_error, what + (err && err->message ? std::string(": ") + err->message : ""));
  if (err) e.backend_code = err->code;
  e.driver = "libvirt";
  return e;
}

void ensure_libvirt_initialised() {
  static std::once_flag once;
  std::call_once(once, [] {
    virInitialize();
    virSetErrorFunc(nullptr, quiet_error_handler);
    if (virEventRegisterDefaultImpl() == 0) std::thread(event_loop).detach();
  });
}

Connection::Connection(std::string uri, int max_backoff_seconds)
    : uri_(std::move(uri)), max_backoff_seconds_(max_backoff_seconds) {}

Connection::~Connection() {
  reconnector_.request_stop();
  state_cv_.notify_all();
  if (reconnector_.joinable()) reconnector_.join();
  WriterLock lock(conn_mu_);
  if (conn_) {
    virConnectUnregisterCloseCallback(conn_, &Connection::on_close);
    virConnectClose(conn_);
    conn_ = nullptr;
  }
}

virConnectPtr Connection::open_raw(std::string& error) {
  virConnectPtr c = virConnectOpen(uri_.c_str());
  if (!c) {
    error = last_error("cannot connect to hypervisor at '" + uri_ + "'").message;
    return nullptr;
  }
  virConnectRegisterCloseCallback(c, &Connection::on_close, this, nullptr);
  // Remote connections (qemu://...) detect a dead daemon by keepalive; local
  // drivers (test://) do not support it, which is fine.
  if (virConnectSetKeepAlive(c, 5, 3) < 0) virResetLastError();
  return c;
}

Status Connection::open() {
  ensure_libvirt_initialised();
  std::string error;
  virConnectPtr c = open_raw(error);
  if (!c) {
    Error e = make_error(Errc::hypervisor_unavailable,
                         error + "; check that the hypervisor is running and [libvirt] uri is right");
    e.driver = "libvirt";
    return e;
  }
  {
    WriterLock lock(conn_mu_);
    conn_ = c;
    alive_ = true;
  }
  reconnector_ = std::jthread([this](std::stop_token st) { reconnect_loop(st); });
  return {};
}

void Connection::on_close(virConnectPtr, int reason, void* opaque) {
  const char* why = reason == VIR_CONNECT_CLOSE_REASON_EOF         ? "end of file from the hypervisor"
                    : reason == VIR_CONNECT_CLOSE_REASON_KEEPALIVE ? "keepalive timeout"
                    : reason == VIR_CONNECT_CLOSE_REASON_CLIENT    ? "closed by client"
                                                                   : "error on the connection";
  static_cast<Connection*>(opaque)->mark_dead(std::string("connection closed: ") + why);
}

void Connection::mark_dead(const std::string& reason) {
  MutexLock lock(state_mu_);
  if (!alive_.exchange(false)) return;
  down_reason_ = reason;
  spdlog::error("hypervisor at '{}' unavailable: {}; reconnecting", uri_, reason);
  state_cv_.notify_all();
}

bool Connection::wait_for(bool alive, std::chrono::milliseconds timeout) {
  MutexLock lock(state_mu_);
  return state_cv_.wait_for(state_mu_, timeout, [&] { return alive_.load() == alive; });
}

std::string Connection::unavailable_reason() const {
  MutexLock lock(state_mu_);
  return alive_.load() ? "" : down_reason_;
}

Error Connection::unavailable() const {
  Error e = make_error(Errc::hypervisor_unavailable, "hypervisor at '" + uri_ + "' is unavailable (" +
                                                         unavailable_reason() +
                                                         "); virtcap is reconnecting, retry shortly");
  e.driver = "libvirt";
  return e;
}

void Connection::reconnect_loop(std::stop_token st) {
  while (!st.stop_requested()) {
    {
      MutexLock lock(state_mu_);
      state_cv_.wait(state_mu_, st, [&] { return !alive_.load(); });
      if (st.stop_requested()) return;
    }
    // Drop the dead connection.
    {
      WriterLock lock(conn_mu_);
      if (conn_) {
        virConnectUnregisterCloseCallback(conn_, &Connection::on_close);
        virConnectClose(conn_);
        conn_ = nullptr;
      }
    }
    double backoff = 0.25;
    while (!st.stop_requested()) {
      std::string error;
      virConnectPtr c = open_raw(error);
      if (c) {
        {
          WriterLock lock(conn_mu_);
          conn_ = c;
        }
        MutexLock lock(state_mu_);
        alive_ = true;
        down_reason_.clear();
        ++reconnects_;
        spdlog::info("reconnected to hypervisor at '{}'", uri_);
        state_cv_.notify_all();
        break;
      }
      {
        MutexLock lock(state_mu_);
        down_reason_ = error;
      }
      spdlog::warn("reconnect to '{}' failed ({}); next try in {:.2f} s", uri_, error, backoff);
      MutexLock lock(state_mu_);
      state_cv_.wait_for(state_mu_, st, std::chrono::duration<double>(backoff));
      backoff = std::min(backoff * 2, static_cast<double>(max_backoff_seconds_));
    }
  }
}

}  // namespace virtcap::libvirt
