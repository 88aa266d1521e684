// A PostgreSQL LISTEN connection: LISTENs on channels, then waits on the
// socket with a deadline and returns the notifications that arrived. Other
// code (the fleet index refresher, tests, the benchmark) uses it as is.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "virtcap/error.h"

typedef struct pg_conn PGconn;

namespace virtcap::fleet {

struct Notification {
  std::string channel;
  std::string payload;
  int sender_pid = 0;
};

class PgListener {
 public:
  // Connects with `conninfo` (libpq string or URI) and LISTENs on each channel.
  static Result<std::unique_ptr<PgListener>> open(const std::string& conninfo,
                                                  const std::vector<std::string>& channels);
  ~PgListener();
  PgListener(const PgListener&) = delete;
  PgListener& operator=(const PgListener&) = delete;

  // Returns every notification pending, waiting for the first one until
  // `deadline` (an empty vector when it passes, or when interrupt() was
  // called). store_error when the connection is lost: open a new listener and
  // reload everything, since notifications may have been missed.
  Result<std::vector<Notification>> wait(std::chrono::steady_clock::time_point deadline);
  // Wakes a wait() in another thread (async-signal-safe write to an eventfd).
  void interrupt();

 private:
  PgListener(PGconn* c, int wake_fd) : c_(c), wake_fd_(wake_fd) {}
  std::vector<Notification> drain();
  PGconn* c_;
  int wake_fd_;
};

}  // namespace virtcap::fleet
