// Fleet storage: one schema with versioned migrations, two backends (SQLite,
// the embedded default; PostgreSQL via libpq for several replicas). Every
// write that changes a host bumps its generation in the same transaction; a
// write carrying a stale generation is Errc::conflict and changes nothing. On
// PostgreSQL every write also NOTIFYs kNotifyChannel in the same transaction
// (write_notice: the host name, with the generation and last-seen time it
// leaves; "*" after a bulk import), so other replicas refresh.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/credentials.h"
#include "fleet/model.h"
#include "fleet/sql.h"

namespace virtcap::fleet {

inline constexpr std::string_view kNotifyChannel = "virtcap_fleet";
inline constexpr std::string_view kNotifyEverything = "*";

// A write's notification payload: "NAME GENERATION LAST_SEEN_MS" for a write
// that leaves the host in the database at that version, "NAME" for one that
// deletes it. A replica whose index already holds that version (its own
// write, applied as it answered) skips the re-read.
std::string write_notice(std::string_view host, std::int64_t generation, std::int64_t last_seen_ms);
struct Notice {
  std::string host;
  std::optional<std::int64_t> generation, last_seen_ms;  // both or neither
};
// Any other payload is read as a host name (as the notifications of earlier
// versions were), so nothing is ever skipped by mistake.
Notice parse_notice(std::string_view payload);

struct StoreOptions {
  std::chrono::milliseconds busy_timeout{5000};  // SQLite write-lock wait
  std::size_t connections = 4;                   // PostgreSQL pool size (SQLite: always 1)
};

class FleetStore {
 public:
  virtual ~FleetStore() = default;

  virtual Dialect dialect() const = 0;
  // The libpq connection string (PostgreSQL) or file path (SQLite), for a
  // listener; contains credentials: never log it.
  virtual const std::string& target() const = 0;
  // Whether the database can be reached (PostgreSQL; null for SQLite, a file
  // that is always there). While it cannot, every method fails at once with
  // Errc::store_unavailable and the connections reconnect with back-off.
  virtual const std::shared_ptr<DbHealth>& health() const = 0;
  virtual Result<int> schema_version() = 0;

  // Upserts the host from an agent report: replaces its agent-owned traits and
  // its inventories, never operator traits; sets last_seen. The generation is
  // bumped when anything but last_seen changes. A new host starts at 1.
  // expected_generation, when given, must match (0 for a new host). The uuid
  // of an existing host must match the report's (conflict otherwise).
  virtual Result<HostRecord> report(const AgentReport& report,
                                    std::optional<std::int64_t> expected_generation = std::nullopt) = 0;
  // Operator traits (CUSTOM_*). Adding one the host has, or the generation
  // being stale, change nothing; removing one it lacks is not_found.
  virtual Result<HostRecord> add_operator_trait(std::string_view host, std::string_view trait,
                                                std::int64_t expected_generation) = 0;
  virtual Result<HostRecord> remove_operator_trait(std::string_view host, std::string_view trait,
                                                   std::int64_t expected_generation) = 0;
  virtual Status delete_host(std::string_view host, std::optional<std::int64_t> expected_generation) = 0;

  virtual Result<std::optional<HostRecord>> get_host(std::string_view host) = 0;
  // Every host in name order, `page_hosts` at a time: `each` gets each page
  // (and may move from it); its error stops the scan and is returned. A page
  // is read in one transaction, so a host comes whole with its traits and
  // inventories; pages are not one snapshot, and a host written during the
  // scan may be seen before or after the write (its writer refreshes it).
  // Memory is one page, whatever the fleet's size.
  using PageVisitor = std::function<Status(std::vector<HostRecord>& page)>;
  virtual Status scan_hosts(std::size_t page_hosts, const PageVisitor& each) = 0;
  // Every host, sorted by name, in memory at once: for tests and small tools.
  Result<std::vector<HostRecord>> list_hosts();
  // Bulk insert of new hosts in one transaction (restore, benchmarks); any
  // existing name or uuid fails the whole import.
  virtual Status import_hosts(const std::vector<HostRecord>& hosts) = 0;

  // Deletes the trait names no host holds any more (reports replace a host's
  // traits; deletes remove them); how many went.
  virtual Result<std::size_t> forget_unheld_traits() = 0;

  // Credentials (credentials.h): rows with a salted hash, never a secret.
  // An id already taken is already_exists.
  virtual Status add_credential(const CredentialRecord& c) = 0;
  virtual Result<std::vector<CredentialRecord>> list_credentials() = 0;  // oldest first
  // Sets revoked_ms (revoking again keeps the first time); not_found when
  // there is no such id.
  virtual Result<CredentialRecord> revoke_credential(std::string_view id, std::int64_t now_ms) = 0;
  // Bumped in the same transaction as every add and revoke, so a service
  // polls one row to know when to reload its credentials.
  virtual Result<std::int64_t> credentials_version() = 0;
};

int latest_fleet_schema_version();

// "sqlite:///abs/path.sqlite" or "sqlite://rel/path" (file), or
// "postgresql://..." / "postgres://..." (libpq URI). Migrates the schema to
// the latest version; a newer schema than this binary knows is store_error.
Result<std::unique_ptr<FleetStore>> open_fleet_store(const std::string& url,
                                                     const StoreOptions& options = {});

}  // namespace virtcap::fleet
