// Fleet credentials and the rules of who may do what (docs/fleet.md, "Trust
// model"). Three roles, after Kubernetes' Node authorizer:
//   agent    bound to one host name: may read and report (PUT) that host only;
//            never operator traits, never a delete;
//   operator everything: queries, reports for any host, operator traits, deletes;
//   reader   queries only.
// A token is "vct1.<id>.<secret>": a 12-hex-digit public id (the row's key,
// what logs and `token list` show) and a 256-bit random secret. The database
// keeps only a random 128-bit salt and SHA-256(salt || secret), so a dump of
// it holds no credential; a token is checked by recomputing the hash and
// comparing in constant time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "virtcap/error.h"

namespace virtcap::fleet {

enum class Role { reader, agent, operator_ };
std::string_view to_string(Role r);
std::optional<Role> role_from_string(std::string_view s);

// A credential as the database holds it: no secret.
struct CredentialRecord {
  std::string id;  // 12 lower-case hex digits
  Role role = Role::reader;
  std::string host;  // the agent's host; empty for the other roles
  std::string salt;  // 32 hex digits
  std::string hash;  // 64 hex digits: SHA-256(salt bytes || secret bytes)
  std::int64_t created_ms = 0;
  std::int64_t revoked_ms = 0;  // 0: in force
  std::string note;             // free text given at creation (who it is for)
};

// A new credential: the record to store, and the token to hand out once.
struct NewCredential {
  CredentialRecord record;
  std::string token;
};
// Random id, secret and salt from GnuTLS's key-grade generator. An agent
// credential needs a valid host name; the others take none.
Result<NewCredential> make_credential(Role role, std::string host, std::string note, std::int64_t now_ms);

// A bearer value split into its id and secret; nullopt when it is not a
// well-formed "vct1.<id>.<secret>".
struct TokenParts {
  std::string id;
  std::string secret;  // 64 hex digits
};
std::optional<TokenParts> parse_token(std::string_view token);
// Whether `secret` hashes, with the record's salt, to the record's hash
// (constant time in the secret).
bool token_matches(const CredentialRecord& rec, std::string_view secret);

// Who a request comes from, once authenticated.
struct Principal {
  std::string id;  // credential id, "legacy-token", "cert:<name>" or "anonymous": what audit lines name
  Role role = Role::reader;
  std::string host;              // agent: the one host it speaks for
  std::string describe() const;  // "credential 0123abcd4567 (role agent, host h1)"
};

// What a request wants to do, for the rules below.
enum class Action {
  query,            // GET /v1/hosts, GET /v1/hosts/{name}, health and metrics
  report,           // PUT /v1/hosts/{name}
  operator_traits,  // PUT/DELETE /v1/hosts/{name}/traits/{trait}
  delete_host,      // DELETE /v1/hosts/{name}
};

// nullopt when `p` may do `action` on `host` (empty: no particular host);
// otherwise the refusal (Errc::forbidden), naming the role and the rule.
std::optional<Error> authorize(const Principal& p, Action action, std::string_view host);

}  // namespace virtcap::fleet
