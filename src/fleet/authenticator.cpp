#include "fleet/authenticator.h"

#include <mutex>

#include "fleet/model.h"

namespace virtcap::fleet {

namespace {

constexpr const char* kHowToGetOne =
    "send Authorization: Bearer <token> (an operator makes one with `virtcap fleet token create`), or, where "
    "[fleet_service] client_ca is set, a client certificate it signed";

}  // namespace

std::variant<std::string, std::string> certificate_host(const http::ClientCertificate& cert) {
  using V = std::variant<std::string, std::string>;
  if (cert.dns_names.size() > 1)
    return V(std::in_place_index<1>, "the client certificate names " + std::to_string(cert.dns_names.size()) +
                                         " DNS names; an agent's certificate names exactly one host");
  const std::string name = cert.dns_names.empty() ? cert.common_name : cert.dns_names[0];
  if (auto st = check_host_name(name); !st.ok())
    return V(std::in_place_index<1>, "the client certificate does not name a host: " + st.error().message);
  return V(std::in_place_index<0>, name);
}

Status Authenticator::refresh() {
  auto v = store_.credentials_version();
  if (!v.ok()) return v.error();
  {
    ReaderLock lock(mu_);
    if (*v == version_) return {};
  }
  auto rows = store_.list_credentials();
  if (!rows.ok()) return rows.error();
  std::unordered_map<std::string, CredentialRecord> fresh;
  for (auto& r : *rows) fresh.emplace(r.id, std::move(r));
  WriterLock lock(mu_);
  by_id_ = std::move(fresh);
  version_ = *v;  // a write between the two reads moved it further: the next poll reads again
  return {};
}

std::size_t Authenticator::credentials() const {
  ReaderLock lock(mu_);
  return by_id_.size();
}

std::variant<Principal, std::string> Authenticator::authenticate(const http::Request& req) const {
  using V = std::variant<Principal, std::string>;
  const std::string authz = req.header("authorization");
  if (!authz.empty()) {
    if (!authz.starts_with("Bearer "))
      return V(std::in_place_index<1>, "the Authorization header must be 'Bearer <token>'");
    const std::string_view token = std::string_view(authz).substr(7);
    if (!options_.legacy_token.empty() && http::constant_time_equal(token, options_.legacy_token))
      return Principal{"legacy-token", Role::operator_, ""};
    auto parts = parse_token(token);
    if (!parts)
      return V(std::in_place_index<1>,
               "the bearer token is not a fleet credential (expected vct1.<id>.<secret>, "
               "as `virtcap fleet token create` prints it)");
    ReaderLock lock(mu_);
    auto it = by_id_.find(parts->id);
    if (it == by_id_.end() || !token_matches(it->second, parts->secret))
      return V(std::in_place_index<1>, "credential " + parts->id + " is unknown, or its secret is wrong");
    if (it->second.revoked_ms != 0)
      return V(std::in_place_index<1>, "credential " + parts->id + " was revoked");
    return Principal{it->second.id, it->second.role, it->second.host};
  }
  if (req.client_certificate) {
    auto host = certificate_host(*req.client_certificate);
    if (host.index() == 1) return V(std::in_place_index<1>, std::get<1>(host));
    return Principal{"cert:" + std::get<0>(host), Role::agent, std::get<0>(host)};
  }
  if (options_.anonymous) return Principal{"anonymous", *options_.anonymous, ""};
  return V(std::in_place_index<1>, std::string("a credential is required: ") + kHowToGetOne);
}

}  // namespace virtcap::fleet
