// Typed errors and results. Every fallible operation across a layer boundary
// returns Result<T> (or Status); the error carries a machine-readable code and
// the facts an operator needs, never just a string.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace virtcap {

// The one list of error codes: X(name, HTTP status, doc). The enum, its names
// (to_string), the reverse map (errc_from_string, used by the HTTP client)
// and the HTTP status table (http_status_of) are all generated from it.
// clang-format off
#define VIRTCAP_ERRC(X)                                                                                   \
  X(invalid_argument, 400, "the caller asked for something malformed")                                   \
  X(not_found, 404, "no such instance / image / interface")                                              \
  X(already_exists, 409, "name or uuid taken")                                                           \
  X(conflict, 409, "wrong state for the operation")                                                      \
  X(forbidden, 403, "the caller's credential may not do this (its role's rules)")                       \
  X(capability_not_supported, 409, "the driver's capabilities refuse the operation")                     \
  X(hypervisor_unavailable, 503, "the connection to the hypervisor is gone")                             \
  X(driver_error, 500, "the hypervisor refused or failed the operation")                                 \
  X(driver_load_failed, 500, "unknown driver, or its init_host failed")                                  \
  X(store_error, 500, "the instance store failed")                                                       \
  X(store_unavailable, 503, "the database cannot be reached now (retry later)")                          \
  X(io_error, 500, "a filesystem or subprocess failure")                                                 \
  X(internal, 500, "a bug")
// clang-format on

enum class Errc {
#define VIRTCAP_ERRC_ENUM_(name, status, doc) name,
  VIRTCAP_ERRC(VIRTCAP_ERRC_ENUM_)
#undef VIRTCAP_ERRC_ENUM_
};

// Every code, in declaration order.
inline constexpr Errc kAllErrcs[] = {
#define VIRTCAP_ERRC_LIST_(name, status, doc) Errc::name,
    VIRTCAP_ERRC(VIRTCAP_ERRC_LIST_)
#undef VIRTCAP_ERRC_LIST_
};

// "invalid_argument" ...
std::string_view to_string(Errc code);
// The code of that name; nullopt for anything else.
std::optional<Errc> errc_from_string(std::string_view name);
// The HTTP status an error of this code is answered with.
int http_status_of(Errc code);

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

// What Result::value() throws when the result holds an error: a bug in the
// caller, who should have checked ok() first. It carries the error.
template <class E>
class BadResultAccess : public std::exception {
 public:
  explicit BadResultAccess(E error) : error_(std::move(error)) {}
  const E& error() const noexcept { return error_; }
  const char* what() const noexcept override { return "Result::value() called on an error"; }

 private:
  E error_;
};

template <class T, class E>
class Result;

namespace detail {
template <class R>
struct IsResult : std::false_type {};
template <class T, class E>
struct IsResult<Result<T, E>> : std::true_type {};
}  // namespace detail

// A value or an error. E defaults to the common Error; a module with its own
// typed error (e.g. the qcow2 reader) uses its own E.
//
// Test with ok(); there is no conversion to bool (as with abseil's StatusOr),
// so `if (r)` cannot be read as "the value is true". For the same reason
// there is no Result<bool>: return an enum or a small struct that names the
// answer.
template <class T, class E = Error>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, bool>,
                "Result<bool> reads as a success flag; return an enum or a struct naming the answer");

 public:
  using value_type = T;
  using error_type = E;

  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(E error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  // The value; throws BadResultAccess<E> (carrying the error) on an error.
  T& value() & {
    check();
    return *std::get_if<0>(&v_);
  }
  const T& value() const& {
    check();
    return *std::get_if<0>(&v_);
  }
  T&& value() && {
    check();
    return std::move(*std::get_if<0>(&v_));
  }
  // The value, or `fallback` on an error.
  template <class U>
  T value_or(U&& fallback) const& {
    return ok() ? *std::get_if<0>(&v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return ok() ? std::move(*std::get_if<0>(&v_)) : static_cast<T>(std::forward<U>(fallback));
  }
  const E& error() const { return std::get<1>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // f(value) -> Result<U, E>; an error passes through untouched.
  template <class F>
  auto and_then(F&& f) const& {
    using R = std::invoke_result_t<F, const T&>;
    static_assert(detail::IsResult<R>::value, "and_then's function returns a Result");
    if (!ok()) return R(error());
    return std::forward<F>(f)(*std::get_if<0>(&v_));
  }
  template <class F>
  auto and_then(F&& f) && {
    using R = std::invoke_result_t<F, T&&>;
    static_assert(detail::IsResult<R>::value, "and_then's function returns a Result");
    if (!ok()) return R(std::get<1>(std::move(v_)));
    return std::forward<F>(f)(std::move(*std::get_if<0>(&v_)));
  }
  // f(value) -> U, as a Result<U, E>; an error passes through untouched.
  template <class F>
  auto transform(F&& f) const& {
    using U = std::remove_cv_t<std::invoke_result_t<F, const T&>>;
    if (!ok()) return Result<U, E>(error());
    return Result<U, E>(std::forward<F>(f)(*std::get_if<0>(&v_)));
  }
  template <class F>
  auto transform(F&& f) && {
    using U = std::remove_cv_t<std::invoke_result_t<F, T&&>>;
    if (!ok()) return Result<U, E>(std::get<1>(std::move(v_)));
    return Result<U, E>(std::forward<F>(f)(std::move(*std::get_if<0>(&v_))));
  }

 private:
  void check() const {
    if (!ok()) throw BadResultAccess<E>(std::get<1>(v_));
  }
  std::variant<T, E> v_;
};

template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Result() = default;
  Result(E error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  // Throws BadResultAccess<E> on an error; nothing otherwise.
  void value() const {
    if (!ok_) throw BadResultAccess<E>(err_);
  }
  const E& error() const { return err_; }

  // f() -> Result<U, E>, run only on success.
  template <class F>
  auto and_then(F&& f) const {
    using R = std::invoke_result_t<F>;
    static_assert(detail::IsResult<R>::value, "and_then's function returns a Result");
    if (!ok_) return R(err_);
    return std::forward<F>(f)();
  }
  // f() -> U, as a Result<U, E>, run only on success.
  template <class F>
  auto transform(F&& f) const {
    using U = std::remove_cv_t<std::invoke_result_t<F>>;
    if (!ok_) return Result<U, E>(err_);
    if constexpr (std::is_void_v<U>) {
      std::forward<F>(f)();
      return Result<void, E>();
    } else {
      return Result<U, E>(std::forward<F>(f)());
    }
  }

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

// The one helper for a malformed request, value or file.
inline Error invalid_argument_error(std::string message) {
  return make_error(Errc::invalid_argument, std::move(message));
}

}  // namespace virtcap
