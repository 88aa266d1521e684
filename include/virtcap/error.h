// Typed errors and results. Every fallible operation across a layer boundary
// returns Result<T> (or Status); the error carries a machine-readable code and
// the facts an operator needs, never just a string.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace virtcap {

enum class Errc {
  invalid_argument,          // the caller asked for something malformed
  not_found,                 // no such instance / image / interface
  already_exists,            // name or uuid taken
  conflict,                  // wrong state for the operation
  forbidden,                 // the caller's credential may not do this (its role's rules)
  capability_not_supported,  // the driver's capabilities refuse the operation
  hypervisor_unavailable,    // the connection to the hypervisor is gone
  driver_error,              // the hypervisor refused or failed the operation
  driver_load_failed,        // unknown driver, or its init_host failed
  store_error,               // the instance store failed
  store_unavailable,         // the database cannot be reached now (retry later)
  io_error,                  // a filesystem or subprocess failure
  internal,                  // a bug
};

std::string_view to_string(Errc code);

struct Error {
  Errc code = Errc::internal;
  std::string message;     // one sentence: what happened, where, what to do
  std::string operation;   // set for capability_not_supported
  std::string capability;  // set for capability_not_supported
  std::string driver;      // the driver involved, when one is
  int backend_code = 0;    // e.g. libvirt's virErrorNumber

  // "capability_not_supported: <message>"
  std::string describe() const;
};

// A value or an error. E defaults to the common Error; a module with its own
// typed error (e.g. the qcow2 reader) uses its own E.
template <class T, class E = Error>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(E error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const E& error() const { return std::get<1>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, E> v_;
};

template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(E error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const { return err_; }

 private:
  E err_{};
  bool ok_ = true;
};

using Status = Result<void>;

inline Error make_error(Errc code, std::string message) {
  Error e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

}  // namespace virtcap
