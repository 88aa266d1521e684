// The server side of TLS: the certificate chain and key a server presents,
// read from PEM files and checked at start with GnuTLS, the library
// libmicrohttpd serves them with (docs/design.md, "TLS").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "virtcap/error.h"

namespace virtcap::http {

struct TlsMaterial {
  std::string cert_pem;        // the chain: the server's certificate first
  std::string key_pem;         // its unencrypted private key
  std::string subject;         // of the server's certificate, for the log
  std::int64_t not_after = 0;  // its expiry, Unix seconds
};

// tls_cert and tls_key are set together, or neither (invalid_argument).
Status check_tls_pair(const std::string& cert_file, const std::string& key_file, const std::string& section);

// Refuses, with invalid_argument naming `section`, the option and the file:
// only one of cert/key set; a file missing, not a regular file, unreadable
// or over 1 MiB; no PEM certificate; a key GnuTLS cannot load (encrypted,
// not PEM); a key that does not match the first certificate; a certificate
// not yet valid or expired at `now` (every verifying client would refuse it,
// so the server refuses to start rather than fail every connection).
// nullopt when both are empty (plain HTTP).
Result<std::optional<TlsMaterial>> load_tls(const std::string& cert_file, const std::string& key_file,
                                            const std::string& section, std::int64_t now);

// The CA bundle client certificates are verified against (`section`
// client_ca): its PEM text, with at least one certificate, or
// invalid_argument naming the option and the file. "" when `file` is empty.
Result<std::string> load_client_ca(const std::string& file, const std::string& section);

// What a verified client certificate says of its holder.
struct ClientCertificate {
  std::string common_name;             // the subject's CN ("" when none)
  std::vector<std::string> dns_names;  // its DNS subjectAltNames
};
// The client's certificate on `gnutls_session` (a gnutls_session_t), when
// the client sent one that verifies against the server's trusted CAs, is
// valid now, and is meant for TLS client authentication (extended key
// usage); nullopt otherwise (none sent, or not trusted).
std::optional<ClientCertificate> verified_client_certificate(void* gnutls_session);

// GnuTLS's own check of a priority string: invalid_argument naming
// `section` tls_priority and the part it could not read.
Status check_tls_priority(const std::string& priority, const std::string& section);

}  // namespace virtcap::http
