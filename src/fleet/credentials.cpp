#include "fleet/credentials.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <array>

#include "fleet/model.h"
#include "http/server.h"

namespace virtcap::fleet {

namespace {

constexpr std::string_view kTokenPrefix = "vct1.";
constexpr std::size_t kIdBytes = 6, kSecretBytes = 32, kSaltBytes = 16;

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 0xf];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Lower-case hex of exactly `digits` digits -> bytes; nullopt otherwise.
std::optional<std::string> unhex(std::string_view s, std::size_t digits) {
  if (s.size() != digits) return std::nullopt;
  std::string out(digits / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

Result<std::string> random_hex(std::size_t bytes) {
  std::array<unsigned char, 64> buf{};
  if (bytes > buf.size() || gnutls_rnd(GNUTLS_RND_KEY, buf.data(), bytes) != 0)
    return make_error(Errc::internal, "GnuTLS's random generator failed; no credential was made");
  return hex(buf.data(), bytes);
}

// SHA-256(salt bytes || secret bytes) in hex; "" when either is malformed.
std::string salted_hash(std::string_view salt_hex, std::string_view secret_hex) {
  auto salt = unhex(salt_hex, kSaltBytes * 2);
  auto secret = unhex(secret_hex, kSecretBytes * 2);
  if (!salt || !secret) return "";
  const std::string data = *salt + *secret;
  std::array<unsigned char, 32> digest{};
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data.data(), data.size(), digest.data()) != 0) return "";
  return hex(digest.data(), digest.size());
}

}  // namespace

std::string_view to_string(Role r) {
  switch (r) {
    case Role::reader: return "reader";
    case Role::agent: return "agent";
    case Role::operator_: return "operator";
  }
  return "reader";
}

std::optional<Role> role_from_string(std::string_view s) {
  for (Role r : {Role::reader, Role::agent, Role::operator_})
    if (to_string(r) == s) return r;
  return std::nullopt;
}

Result<NewCredential> make_credential(Role role, std::string host, std::string note, std::int64_t now_ms) {
  if (role == Role::agent) {
    if (host.empty())
      return make_error(Errc::invalid_argument, "an agent credential is bound to one host: give --host NAME");
    if (auto st = check_host_name(host); !st.ok()) return st.error();
  } else if (!host.empty()) {
    return make_error(Errc::invalid_argument, "only an agent credential is bound to a host; a " +
                                                  std::string(to_string(role)) +
                                                  " credential takes no --host");
  }
  auto id = random_hex(kIdBytes);
  auto secret = random_hex(kSecretBytes);
  auto salt = random_hex(kSaltBytes);
  if (!id.ok()) return id.error();
  if (!secret.ok()) return secret.error();
  if (!salt.ok()) return salt.error();
  NewCredential c;
  c.record = {*id, role, std::move(host), *salt, salted_hash(*salt, *secret), now_ms, 0, std::move(note)};
  c.token = std::string(kTokenPrefix) + *id + "." + *secret;
  return c;
}

std::optional<TokenParts> parse_token(std::string_view token) {
  if (!token.starts_with(kTokenPrefix)) return std::nullopt;
  token.remove_prefix(kTokenPrefix.size());
  const auto dot = token.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  TokenParts p{std::string(token.substr(0, dot)), std::string(token.substr(dot + 1))};
  if (!unhex(p.id, kIdBytes * 2) || !unhex(p.secret, kSecretBytes * 2)) return std::nullopt;
  return p;
}

bool token_matches(const CredentialRecord& rec, std::string_view secret) {
  const std::string h = salted_hash(rec.salt, secret);
  return !h.empty() && http::constant_time_equal(h, rec.hash);
}

std::string Principal::describe() const {
  std::string s = id == "anonymous" ? "an anonymous request" : "credential " + id;
  s += " (role " + std::string(to_string(role));
  if (role == Role::agent) s += ", host " + host;
  return s + ")";
}

std::optional<Error> authorize(const Principal& p, Action action, std::string_view host) {
  auto refuse = [&p](const std::string& rule) {
    return make_error(Errc::forbidden, p.describe() + ": " + rule);
  };
  switch (p.role) {
    case Role::operator_: return std::nullopt;
    case Role::reader:
      if (action == Action::query) return std::nullopt;
      return refuse(
          "a reader may only query; writes need an agent credential (its own host) or an operator one");
    case Role::agent:
      switch (action) {
        case Action::query:
        case Action::report:
          if (host == p.host) return std::nullopt;
          return refuse(host.empty()
                            ? std::string("an agent may read only its own host (GET /v1/hosts/") + p.host +
                                  "); fleet-wide queries need a reader or operator credential"
                            : "an agent may read and report only its own host (" + p.host + "), not " +
                                  quote_for_error(host));
        case Action::operator_traits:
          return refuse("operator (CUSTOM_*) traits are set by operators only; an agent never changes them");
        case Action::delete_host: return refuse("only an operator deletes hosts");
      }
  }
  return refuse("no rule allows this");
}

}  // namespace virtcap::fleet
