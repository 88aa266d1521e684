#include "http/tls.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <type_traits>

#include "common/fd.h"
#include "common/time_text.h"

namespace virtcap::http {

namespace {

constexpr std::size_t kMaxPemBytes = 1024 * 1024;

Error tls_error(const std::string& section, const char* option, const std::string& file,
                const std::string& what) {
  return make_error(Errc::invalid_argument, section + " " + option + " " + file + ": " + what);
}

// The whole of a small regular file, or why not.
Result<std::string> read_small_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid())
    return make_error(Errc::invalid_argument, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return make_error(Errc::invalid_argument, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return make_error(Errc::invalid_argument, "not a regular file");
  if (static_cast<std::size_t>(st.st_size) > kMaxPemBytes)
    return make_error(Errc::invalid_argument, "larger than 1 MiB; expected a PEM file");
  std::string out(static_cast<std::size_t>(st.st_size), '\0');
  const long long n = pread_full(fd.get(), reinterpret_cast<std::uint8_t*>(out.data()), out.size(), 0);
  if (n < 0)
    return make_error(Errc::invalid_argument,
                      std::string("cannot read: ") + std::strerror(static_cast<int>(-n)));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

gnutls_datum_t datum(const std::string& s) {
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())), static_cast<unsigned>(s.size())};
}

struct CertList {
  gnutls_x509_crt_t* certs = nullptr;
  unsigned count = 0;
  ~CertList() {
    for (unsigned i = 0; i < count; ++i) gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
  }
};

std::string subject_of(gnutls_x509_crt_t cert) {
  gnutls_datum_t dn{};
  if (gnutls_x509_crt_get_dn3(cert, &dn, 0) < 0) return "(no subject)";
  std::string s(reinterpret_cast<const char*>(dn.data), dn.size);
  gnutls_free(dn.data);
  return s;
}

// Loads the pair as libmicrohttpd will: the key must load and match.
int key_matches(const std::string& cert_pem, const std::string& key_pem) {
  gnutls_certificate_credentials_t cred = nullptr;
  if (int rc = gnutls_certificate_allocate_credentials(&cred); rc < 0) return rc;
  const gnutls_datum_t c = datum(cert_pem), k = datum(key_pem);
  const int rc = gnutls_certificate_set_x509_key_mem2(cred, &c, &k, GNUTLS_X509_FMT_PEM, nullptr, 0);
  gnutls_certificate_free_credentials(cred);
  return rc;
}

}  // namespace

Status check_tls_pair(const std::string& cert_file, const std::string& key_file, const std::string& section) {
  if (cert_file.empty() == key_file.empty()) return {};
  return make_error(Errc::invalid_argument, section + " tls_cert and tls_key must be set together (only " +
                                                (cert_file.empty() ? "tls_key" : "tls_cert") +
                                                " is set); set both for HTTPS, or neither");
}

Result<std::optional<TlsMaterial>> load_tls(const std::string& cert_file, const std::string& key_file,
                                            const std::string& section, std::int64_t now) {
  if (auto st = check_tls_pair(cert_file, key_file, section); !st.ok()) return st.error();
  if (cert_file.empty()) return std::optional<TlsMaterial>();
  TlsMaterial m;
  auto cert = read_small_file(cert_file);
  if (!cert.ok()) return tls_error(section, "tls_cert", cert_file, cert.error().message);
  auto key = read_small_file(key_file);
  if (!key.ok()) return tls_error(section, "tls_key", key_file, key.error().message);
  m.cert_pem = std::move(cert.value());
  m.key_pem = std::move(key.value());

  CertList list;
  const gnutls_datum_t c = datum(m.cert_pem);
  if (int rc = gnutls_x509_crt_list_import2(&list.certs, &list.count, &c, GNUTLS_X509_FMT_PEM, 0);
      rc < 0 || !list.count)
    return tls_error(section, "tls_cert", cert_file,
                     std::string("no PEM certificate could be read (") + gnutls_strerror(rc) +
                         "); expected the server's certificate, then any intermediates, each "
                         "'-----BEGIN CERTIFICATE-----'");
  if (int rc = key_matches(m.cert_pem, m.key_pem); rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
    return tls_error(section, "tls_key", key_file, "this key does not match the certificate in " + cert_file);
  else if (rc < 0)
    return tls_error(section, "tls_key", key_file,
                     std::string("cannot load the private key (") + gnutls_strerror(rc) +
                         "); expected an unencrypted PEM private key");
  m.subject = subject_of(list.certs[0]);
  m.not_after = gnutls_x509_crt_get_expiration_time(list.certs[0]);
  const std::int64_t not_before = gnutls_x509_crt_get_activation_time(list.certs[0]);
  if (now < not_before)
    return tls_error(section, "tls_cert", cert_file,
                     "the certificate is not valid before " + utc_text(not_before) + " (now " +
                         utc_text(now) + "); check this host's clock, or issue a certificate valid now");
  if (now > m.not_after)
    return tls_error(section, "tls_cert", cert_file,
                     "the certificate expired at " + utc_text(m.not_after) + " (now " + utc_text(now) +
                         "); clients would refuse it: renew it");
  return std::optional<TlsMaterial>(std::move(m));
}

Result<std::string> load_client_ca(const std::string& file, const std::string& section) {
  if (file.empty()) return std::string();
  auto pem = read_small_file(file);
  if (!pem.ok()) return tls_error(section, "client_ca", file, pem.error().message);
  CertList list;
  const gnutls_datum_t c = datum(*pem);
  if (int rc = gnutls_x509_crt_list_import2(&list.certs, &list.count, &c, GNUTLS_X509_FMT_PEM, 0);
      rc < 0 || !list.count)
    return tls_error(section, "client_ca", file,
                     std::string("no PEM certificate could be read (") + gnutls_strerror(rc) +
                         "); expected the CA certificate(s) that sign agents' client certificates");
  return std::move(*pem);
}

std::optional<ClientCertificate> verified_client_certificate(void* gnutls_session) {
  auto* session = static_cast<gnutls_session_t>(gnutls_session);
  if (!session) return std::nullopt;
  unsigned status = 0;
  gnutls_typed_vdata_st purpose{GNUTLS_DT_KEY_PURPOSE_OID,
                                reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT)),
                                0};
  if (gnutls_certificate_verify_peers(session, &purpose, 1, &status) != GNUTLS_E_SUCCESS || status != 0)
    return std::nullopt;
  unsigned n = 0;
  const gnutls_datum_t* peers = gnutls_certificate_get_peers(session, &n);
  if (!peers || n == 0) return std::nullopt;
  gnutls_x509_crt_t crt = nullptr;
  if (gnutls_x509_crt_init(&crt) < 0) return std::nullopt;
  std::unique_ptr<std::remove_pointer_t<gnutls_x509_crt_t>, void (*)(gnutls_x509_crt_t)> guard(
      crt, gnutls_x509_crt_deinit);
  if (gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) < 0) return std::nullopt;
  ClientCertificate out;
  char buf[512];
  std::size_t size = sizeof buf;
  if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &size) >= 0)
    out.common_name.assign(buf, size);
  for (unsigned i = 0;; ++i) {
    size = sizeof buf;
    unsigned critical = 0;
    const int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &size, &critical);
    if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
    if (type == GNUTLS_E_SHORT_MEMORY_BUFFER) continue;  // a name over 512 bytes is no host name
    if (type < 0) return std::nullopt;                   // unreadable: trust nothing it says
    if (type == GNUTLS_SAN_DNSNAME) out.dns_names.emplace_back(buf, size);
  }
  return out;
}

Status check_tls_priority(const std::string& priority, const std::string& section) {
  gnutls_priority_t p = nullptr;
  const char* err_pos = nullptr;
  const int rc = gnutls_priority_init2(&p, priority.c_str(), &err_pos, 0);
  if (rc == GNUTLS_E_SUCCESS) {
    gnutls_priority_deinit(p);
    return {};
  }
  std::string where;
  if (err_pos && err_pos >= priority.c_str() && err_pos <= priority.c_str() + priority.size())
    where = " at \"" + std::string(err_pos).substr(0, 40) + "\"";
  return make_error(Errc::invalid_argument, section + " tls_priority is not a GnuTLS priority string" +
                                                where + ": " + gnutls_strerror(rc) +
                                                " (see `gnutls-cli --priority STRING --list`)");
}

}  // namespace virtcap::http
