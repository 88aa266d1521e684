// A throwaway PostgreSQL 15 cluster for tests and benchmarks: initdb in a
// temporary directory, a server on a Unix socket in that directory only (no
// TCP), one fresh database per caller, stopped and removed at the end.
// PostgreSQL refuses to run as root, so as root the server runs as user
// "postgres" (runuser, by argv). Needs Debian's postgresql-15
// (scripts/install-deps). No gtest here: the benchmark uses it too; see
// postgres_env.h for the GoogleTest global environment.
#pragma once

#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "fleet/sql.h"

namespace virtcap::testing {

class PgCluster {
 public:
  static constexpr const char* kBin = "/usr/lib/postgresql/15/bin/";
  static constexpr int kPort = 5432;  // only names the socket file, inside our own directory

  static Result<std::unique_ptr<PgCluster>> start() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "virtcap-pg-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr)
      return make_error(Errc::io_error, "mkdtemp for the PostgreSQL cluster");
    std::unique_ptr<PgCluster> c(new PgCluster(tmpl));
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr)
        return make_error(Errc::io_error,
                          "running as root and there is no user 'postgres': run scripts/install-deps");
      if (::chown(tmpl.c_str(), pw->pw_uid, pw->pw_gid) != 0)
        return make_error(Errc::io_error, "chown " + tmpl + " to postgres failed");
      c->as_postgres_ = true;
    }
    if (auto st = c->run({std::string(kBin) + "initdb", "-D", c->data(), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--locale=C", "--no-sync"});
        !st.ok())
      return st.error();
    {
      std::ofstream conf(c->data() + "/postgresql.conf", std::ios::app);
      conf << "\nlisten_addresses = ''\nport = " << kPort << "\nunix_socket_directories = '" << c->dir_
           << "'\nfsync = off\nfull_page_writes = off\nsynchronous_commit = off\nmax_connections = 200\n";
      if (!conf) return make_error(Errc::io_error, "cannot write " + c->data() + "/postgresql.conf");
    }
    if (auto st = c->run({std::string(kBin) + "pg_ctl", "-D", c->data(), "-l", c->dir_ + "/server.log", "-w",
                          "-t", "60", "start"});
        !st.ok())
      return st.error();
    c->running_ = true;
    return c;
  }

  ~PgCluster() {
    if (running_)
      (void)run({std::string(kBin) + "pg_ctl", "-D", data(), "-m", "fast", "-w", "-t", "60", "stop"});
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // The server's Unix socket (what a TCP proxy in front of it connects to).
  std::string socket_path() const { return dir_ + "/.s.PGSQL." + std::to_string(kPort); }
  // A libpq URI for database `db` reached over TCP at 127.0.0.1:port (a
  // proxy forwarding to socket_path(): the server itself listens on no TCP).
  std::string tcp_url(const std::string& db, int port) const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/" + db;
  }
  static std::string database_name(const std::string& url) {
    const auto at = url.find('/', url.find("@") + 1);
    return url.substr(at + 1, url.find('?', at) - at - 1);
  }
  // pg_ctl restart/stop/start (-m fast, -w: returns once done). Tests of
  // outages use a cluster of their own (start()), never the shared one.
  Status pg_ctl(const std::string& action) {
    std::vector<std::string> argv = {std::string(kBin) + "pg_ctl", "-D", data(), "-w", "-t", "60"};
    if (action != "start") argv.insert(argv.end(), {"-m", "fast"});
    // A server started without -l would keep our output pipes open.
    if (action != "stop") argv.insert(argv.end(), {"-l", dir_ + "/server.log"});
    argv.push_back(action);
    auto st = run(argv);
    if (st.ok()) running_ = action != "stop";
    return st;
  }

  // A libpq URI for database `db` on this cluster.
  std::string url(const std::string& db) const {
    return "postgresql://postgres@/" + db + "?host=" + dir_ + "&port=" + std::to_string(kPort);
  }

  // Creates a new empty database; returns its URI.
  Result<std::string> create_database() {
    const std::string name = "virtcap_t" + std::to_string(++databases_);
    auto conn = fleet::open_postgres(url("postgres"));
    if (!conn.ok()) return conn.error();
    if (auto r = (*conn)->exec("CREATE DATABASE " + name, {}); !r.ok()) return r.error();
    return url(name);
  }

  // The process-wide cluster, started on first use (nullptr and `error` set
  // if it cannot start); stop_shared() stops it (the test environment does).
  static PgCluster* shared(std::string* error) {
    std::lock_guard lock(shared_mu());
    if (!shared_slot()) {
      auto c = start();
      if (!c.ok()) {
        *error = c.error().message;
        return nullptr;
      }
      shared_slot() = std::move(*c);
    }
    return shared_slot().get();
  }
  static void stop_shared() {
    std::lock_guard lock(shared_mu());
    shared_slot().reset();
  }

 private:
  explicit PgCluster(std::string dir) : dir_(std::move(dir)) {}
  std::string data() const { return dir_ + "/data"; }

  Status run(std::vector<std::string> argv) const {
    if (as_postgres_) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
    auto r = proc::run(argv);
    if (!r.ok()) return r.error();
    if (r->exit_code != 0) {
      std::string log;
      std::ifstream in(dir_ + "/server.log");
      std::getline(in, log, '\0');
      return make_error(Errc::io_error, argv[as_postgres_ ? 4 : 0] + " failed (exit " +
                                            std::to_string(r->exit_code) + "): " + r->err + r->out +
                                            log.substr(log.size() > 2000 ? log.size() - 2000 : 0));
    }
    return {};
  }

  static std::mutex& shared_mu() {
    static std::mutex m;
    return m;
  }
  static std::unique_ptr<PgCluster>& shared_slot() {
    static std::unique_ptr<PgCluster> c;
    return c;
  }

  std::string dir_;
  bool as_postgres_ = false;
  bool running_ = false;
  std::atomic<int> databases_{0};
};

}  // namespace virtcap::testing
