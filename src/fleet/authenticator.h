// Who a fleet request comes from (credentials.h has the roles and rules):
// a bearer token (a credential from the database, or the legacy shared
// [fleet_service] token), else a verified client certificate (an agent bound
// to the host it names), else the anonymous role, if any. Credentials are
// held in memory and re-read when the database's credentials version moves
// (refresh(), polled by the service), so a request never waits on the
// database to be authenticated, and revocations take effect within one poll.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include "common/mutex.h"
#include "fleet/credentials.h"
#include "fleet/store.h"
#include "http/server.h"

namespace virtcap::fleet {

struct AuthOptions {
  std::string legacy_token;       // [fleet_service] token: an operator credential; "" none
  std::optional<Role> anonymous;  // nullopt: a request with no credential is refused
};

class Authenticator {
 public:
  Authenticator(FleetStore& store, AuthOptions options) : store_(store), options_(std::move(options)) {}

  // Re-reads the credentials when their version moved (or on the first
  // call). On an error the credentials already held stay in force.
  Status refresh();
  // Credentials held now (revoked ones included).
  std::size_t credentials() const;

  // The request's principal, or why it has none (the text of a 401).
  std::variant<Principal, std::string> authenticate(const http::Request& req) const;

 private:
  FleetStore& store_;
  const AuthOptions options_;
  mutable SharedMutex mu_;
  std::unordered_map<std::string, CredentialRecord> by_id_ GUARDED_BY(mu_);
  std::int64_t version_ GUARDED_BY(mu_) = -1;
};

// The host a client certificate speaks for: its one DNS subjectAltName, or
// its CN when it has none; an error text when it names none or several.
std::variant<std::string, std::string> certificate_host(const http::ClientCertificate& cert);

}  // namespace virtcap::fleet
