// The signal handling of virtcap's two daemons, `virtcap agent` and
// `virtcap fleet serve`: SIGINT or SIGTERM stops, SIGHUP reloads.
#pragma once

#include <signal.h>

#include <functional>

namespace virtcap::cli {

class DaemonSignals {
 public:
  // Blocks SIGINT, SIGTERM and SIGHUP in this thread, and so in every thread
  // started after it (construct it before any), so that no handler runs in
  // signal context: wait() takes them synchronously. Ignores SIGPIPE: a peer
  // that goes away mid-write (a client, libvirtd restarting, the fleet
  // service) is an EPIPE to read, never a silent death (children start with
  // default dispositions: proc::Child resets them).
  DaemonSignals();
  // Calls on_hangup for each SIGHUP until SIGINT or SIGTERM comes; returns
  // its name ("SIGINT" or "SIGTERM").
  const char* wait(const std::function<void()>& on_hangup);

 private:
  sigset_t signals_;
};

}  // namespace virtcap::cli
