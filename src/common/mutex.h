// Mutexes the compiler checks. std::mutex and std::lock_guard carry no
// thread-safety annotations, so clang's -Wthread-safety cannot tell which
// lock guards which member (and clang 14 reports false warnings under
// std::lock_guard). These thin wrappers carry them: a member declared
// GUARDED_BY(mu_) may be touched only with mu_ held, a function declared
// REQUIRES(mu_) only called with it held, and clang says so at compile time
// (the `thread-safety` build of scripts/test). On g++ the attributes compile
// to nothing and the wrappers to the std types they hold.
//
//   Mutex mu_;
//   int count_ GUARDED_BY(mu_) = 0;
//   void add() { MutexLock lock(mu_); ++count_; }
//
// A condition variable waits on a held Mutex (CondVar): write the condition
// as a loop around wait() in the locked scope, or pass a predicate that
// starts with mu_.assert_held() (a lambda is checked on its own).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <stop_token>

#if defined(__clang__)
#define VIRTCAP_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define VIRTCAP_THREAD_ANNOTATION_(x)
#endif

#define CAPABILITY(x) VIRTCAP_THREAD_ANNOTATION_(capability(x))
#define SCOPED_CAPABILITY VIRTCAP_THREAD_ANNOTATION_(scoped_lockable)
#define GUARDED_BY(x) VIRTCAP_THREAD_ANNOTATION_(guarded_by(x))
#define PT_GUARDED_BY(x) VIRTCAP_THREAD_ANNOTATION_(pt_guarded_by(x))
#define ACQUIRE(...) VIRTCAP_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) VIRTCAP_THREAD_ANNOTATION_(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) VIRTCAP_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) VIRTCAP_THREAD_ANNOTATION_(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) VIRTCAP_THREAD_ANNOTATION_(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) VIRTCAP_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))
#define REQUIRES(...) VIRTCAP_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) VIRTCAP_THREAD_ANNOTATION_(requires_shared_capability(__VA_ARGS__))
#define EXCLUDES(...) VIRTCAP_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) VIRTCAP_THREAD_ANNOTATION_(assert_capability(x))
#define ASSERT_SHARED_CAPABILITY(x) VIRTCAP_THREAD_ANNOTATION_(assert_shared_capability(x))
#define NO_THREAD_SAFETY_ANALYSIS VIRTCAP_THREAD_ANNOTATION_(no_thread_safety_analysis)

namespace virtcap {

class CondVar;

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis mu_ is held where it cannot see it (a predicate
  // lambda run by CondVar under the lock). Checks nothing at run time.
  void assert_held() const ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope: from construction (or adopted, already held)
// to destruction; unlock() and lock() let a scope drop it for a while.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  MutexLock(Mutex& mu, std::adopt_lock_t) REQUIRES(mu) : mu_(mu) {}
  ~MutexLock() RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() RELEASE() {
    mu_.unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    mu_.lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// A reader-writer mutex: many shared holders (ReaderLock) or one exclusive
// (WriterLock).
class CAPABILITY("shared mutex") SharedMutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  void lock_shared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void unlock_shared() RELEASE_SHARED() { mu_.unlock_shared(); }
  // Tell the analysis the mutex is held (exclusively, or shared) where it
  // cannot see it: inside a lambda run under the lock. Check nothing at run time.
  void assert_held() const ASSERT_CAPABILITY(this) {}
  void assert_reader_held() const ASSERT_SHARED_CAPABILITY(this) {}

 private:
  std::shared_mutex mu_;
};

class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex& mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~ReaderLock() RELEASE() {
    if (held_) mu_.unlock_shared();
  }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;
  void unlock() RELEASE() {
    mu_.unlock_shared();
    held_ = false;
  }

 private:
  SharedMutex& mu_;
  bool held_ = true;
};

class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~WriterLock() RELEASE() { mu_.unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex& mu_;
};

// A condition variable for Mutex. Every wait needs the mutex held, gives it
// up while blocked and holds it again on return; wakeups may be spurious.
class CondVar {
 public:
  void notify_one() { cv_.notify_one(); }
  void notify_all() { cv_.notify_all(); }

  void wait(Mutex& mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu.mu_, std::adopt_lock);
    cv_.wait(l);
    l.release();
  }
  // False once `deadline` has passed.
  template <class Clock, class Duration>
  bool wait_until(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu.mu_, std::adopt_lock);
    const bool woken = cv_.wait_until(l, deadline) == std::cv_status::no_timeout;
    l.release();
    return woken;
  }
  // Until pred() holds (true) or `deadline` passes (pred() then).
  template <class Clock, class Duration, class Pred>
  bool wait_until(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline, Pred pred)
      REQUIRES(mu) {
    while (!pred())
      if (!wait_until(mu, deadline)) return pred();
    return true;
  }
  template <class Rep, class Period, class Pred>
  bool wait_for(Mutex& mu, const std::chrono::duration<Rep, Period>& timeout, Pred pred) REQUIRES(mu) {
    return wait_until(mu, std::chrono::steady_clock::now() + timeout, std::move(pred));
  }
  // Until pred() holds (true) or a stop is requested (false, unless pred()
  // holds by then).
  template <class Pred>
  bool wait(Mutex& mu, std::stop_token st, Pred pred) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu.mu_, std::adopt_lock);
    const bool ok = cv_.wait(l, std::move(st), std::move(pred));
    l.release();
    return ok;
  }
  // Until `deadline` or a stop request, whichever is first; true when a
  // stop was requested.
  template <class Clock, class Duration>
  bool wait_until(Mutex& mu, std::stop_token st, const std::chrono::time_point<Clock, Duration>& deadline)
      REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu.mu_, std::adopt_lock);
    cv_.wait_until(l, st, deadline, [] { return false; });
    l.release();
    return st.stop_requested();
  }
  template <class Rep, class Period>
  bool wait_for(Mutex& mu, std::stop_token st, const std::chrono::duration<Rep, Period>& timeout)
      REQUIRES(mu) {
    return wait_until(mu, std::move(st), std::chrono::steady_clock::now() + timeout);
  }

 private:
  std::condition_variable_any cv_;
};

// Sleeps for `d`, or less when a stop is requested first; true when stopped.
template <class Rep, class Period>
bool sleep_unless_stopped(std::stop_token st, const std::chrono::duration<Rep, Period>& d) {
  Mutex mu;
  MutexLock lock(mu);
  return CondVar().wait_for(mu, std::move(st), d);
}

}  // namespace virtcap
