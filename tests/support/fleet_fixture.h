// Shared pieces of the fleet tests: the two backends every suite runs on,
// their fresh databases, and a typical agent report.
#pragma once

#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "fleet/model.h"
#include "fleet/service.h"
#include "fleet/wire.h"
#include "support/postgres_env.h"
#include "support/test_support.h"

namespace virtcap::testing {

enum class FleetBackend { sqlite, postgres };
inline void PrintTo(FleetBackend b, std::ostream* os) {
  *os << (b == FleetBackend::sqlite ? "SQLite" : "PostgreSQL");
}
inline std::string backend_name(FleetBackend b) {
  return b == FleetBackend::sqlite ? "SQLite" : "PostgreSQL";
}

// A real SQLite file in `dir`, or a fresh database on the throwaway
// PostgreSQL cluster ("" after failing the test when it cannot start).
inline std::string fleet_database_url(FleetBackend b, const TempDir& dir) {
  return b == FleetBackend::sqlite ? "sqlite://" + dir.sub("fleet.sqlite") : pg_database_url();
}

inline std::string fleet_uuid(int n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", n);
  return buf;
}

// host<n>: 8 VCPU at ratio 2 (vcpu_used used), 16 GiB memory (512 MiB
// reserved, 1 GiB used), seen now.
inline fleet::AgentReport fleet_report(int n, std::vector<std::string> traits, std::int64_t vcpu_used = 0) {
  fleet::AgentReport r;
  r.name = "host" + std::to_string(n);
  r.uuid = fleet_uuid(n);
  r.agent_version = "0.1.0";
  r.api_url = "http://10.0.0." + std::to_string(n) + ":8080";
  r.traits = std::move(traits);
  r.inventories[0] = fleet::Inventory{8, 0, 2.0, vcpu_used};
  r.inventories[1] = fleet::Inventory{16384, 512, 1.0, 1024};
  r.seen_at_ms = fleet::now_ms();
  return r;
}

// fleet_report(n, ...) as the JSON body of PUT /v1/hosts/host<n>.
inline nlohmann::json fleet_report_json(int n, std::vector<std::string> traits, std::int64_t vcpu_used = 0) {
  return fleet::to_json(fleet_report(n, std::move(traits), vcpu_used));
}

// An in-process fleet service with `o` on 127.0.0.1 (any free port), on
// the database `database_url`; sets `server` to its http:// URL. nullptr
// (after failing the test) when it cannot open, bind or start.
inline std::unique_ptr<fleet::FleetService> start_fleet_service(fleet::ServiceOptions o,
                                                                const std::string& database_url,
                                                                std::string& server) {
  o.fleet.database_url = database_url;
  o.http.listen = "127.0.0.1:0";
  o.http.max_body_bytes = fleet::kMaxReportBodyBytes;
  o.http.config_section = "[fleet_service]";
  auto s = fleet::FleetService::open(o);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  if (!s.ok()) return nullptr;
  auto port = (*s)->bind();
  EXPECT_TRUE(port.ok()) << (port.ok() ? "" : port.error().message);
  if (!port.ok() || !(*s)->start().ok()) return nullptr;
  server = "http://127.0.0.1:" + std::to_string(*port);
  return std::move(*s);
}

}  // namespace virtcap::testing
