#include "fleet/pg_listener.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "fleet/sql.h"

namespace virtcap::fleet {

namespace {

Error lost(PGconn* c, const std::string& doing) {
  std::string msg = c ? PQerrorMessage(c) : "no connection";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return make_error(Errc::store_error,
                    "fleet LISTEN connection: " + doing + ": " + msg + ": reconnect and reload the index");
}

}  // namespace

Result<std::unique_ptr<PgListener>> PgListener::open(const std::string& conninfo,
                                                     const std::vector<std::string>& channels) {
  const auto params = pg_connect_params(conninfo);  // connect_timeout, keepalives (sql.h)
  PGconn* c = PQconnectdbParams(params.keywords.data(), params.values.data(), 1);
  if (c == nullptr || PQstatus(c) != CONNECTION_OK) {
    Error e = lost(c, "connecting");
    PQfinish(c);
    return e;
  }
  for (const auto& ch : channels) {
    char* id = PQescapeIdentifier(c, ch.c_str(), ch.size());
    if (id == nullptr) {
      Error e = lost(c, "quoting channel name");
      PQfinish(c);
      return e;
    }
    const std::string sql = std::string("LISTEN ") + id;
    PQfreemem(id);
    PGresult* r = PQexec(c, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
      Error e = lost(c, "LISTEN " + ch);
      PQfinish(c);
      return e;
    }
  }
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    PQfinish(c);
    return make_error(Errc::io_error, std::string("eventfd for the fleet listener: ") + std::strerror(errno));
  }
  return std::unique_ptr<PgListener>(new PgListener(c, fd));
}

PgListener::~PgListener() {
  PQfinish(c_);
  ::close(wake_fd_);
}

void PgListener::interrupt() {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

std::vector<Notification> PgListener::drain() {
  std::vector<Notification> out;
  while (PGnotify* n = PQnotifies(c_)) {
    out.push_back({n->relname, n->extra, n->be_pid});
    PQfreemem(n);
  }
  return out;
}

Result<std::vector<Notification>> PgListener::wait(std::chrono::steady_clock::time_point deadline) {
  if (PQconsumeInput(c_) == 0) return lost(c_, "reading");
  auto out = drain();
  while (out.empty()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return out;
    pollfd fds[2] = {{PQsocket(c_), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 60000)));
    if (n < 0 && errno != EINTR)
      return make_error(Errc::io_error,
                        std::string("poll on the fleet LISTEN connection: ") + std::strerror(errno));
    if (n > 0 && (fds[1].revents & POLLIN) != 0) {
      std::uint64_t v = 0;
      (void)!::read(wake_fd_, &v, sizeof v);
      return out;
    }
    if (n > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
      if (PQconsumeInput(c_) == 0 || PQstatus(c_) != CONNECTION_OK) return lost(c_, "reading");
      out = drain();
    }
  }
  return out;
}

}  // namespace virtcap::fleet
