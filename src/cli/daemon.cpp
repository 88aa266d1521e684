#include "cli/daemon.h"

#include <pthread.h>

#include <csignal>

namespace virtcap::cli {

DaemonSignals::DaemonSignals() {
  sigemptyset(&signals_);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals_, s);
  pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

const char* DaemonSignals::wait(const std::function<void()>& on_hangup) {
  for (;;) {
    int sig = 0;
    sigwait(&signals_, &sig);
    if (sig != SIGHUP) return sig == SIGTERM ? "SIGTERM" : "SIGINT";
    on_hangup();
  }
}

}  // namespace virtcap::cli
