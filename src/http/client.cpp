#include "http/client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/json_text.h"

namespace virtcap::http {

namespace {

// The body as it arrives, up to a cap: past it the transfer stops
// (returning less than given makes libcurl fail with CURLE_WRITE_ERROR).
struct BodySink {
  std::string data;
  std::size_t max;
  bool over = false;
};
size_t append_body(char* data, size_t size, size_t n, void* out) {
  auto* sink = static_cast<BodySink*>(out);
  if (size * n > sink->max - sink->data.size()) {
    sink->over = true;
    return 0;
  }
  sink->data.append(data, size * n);
  return size * n;
}

struct HeaderList {
  curl_slist* list = nullptr;
  void add(const std::string& h) { list = curl_slist_append(list, h.c_str()); }
  ~HeaderList() { curl_slist_free_all(list); }
};

bool is_https(const std::string& url) { return url.rfind("https://", 0) == 0; }

// Why curl refused the server's certificate, in the words an operator
// searches for. `verify` is OpenSSL's verdict on the chain; curl checks the
// name itself and then reports only its own text ("... host name ...").
std::string refused_certificate(long verify, const std::string& detail, const ClientOptions& o) {
  const std::string store = o.ca_file.empty() ? "the system CA store" : o.ca_file;
  if (verify == X509_V_OK || verify == X509_V_ERR_HOSTNAME_MISMATCH ||
      verify == X509_V_ERR_IP_ADDRESS_MISMATCH ||
      (verify == X509_V_ERR_UNSPECIFIED && detail.find("host name") != std::string::npos))
    return "hostname mismatch: its certificate does not name the host of " + o.url;
  switch (verify) {
    case X509_V_ERR_CERT_HAS_EXPIRED: return "its certificate has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "its certificate is not valid yet (check the clocks of both hosts)";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return "unknown CA: its certificate is not signed by a CA in " + store + "; " + o.ca_hint;
    default: return std::string("its certificate does not verify: ") + X509_verify_cert_error_string(verify);
  }
}

// A transport failure, named for what the operator can do about it.
Error transport_error(CURLcode rc, CURL* h, const char* detail, const ClientOptions& o) {
  const std::string why = std::string(curl_easy_strerror(rc)) + (*detail ? std::string(": ") + detail : "");
  std::string msg;
  if (rc == CURLE_PEER_FAILED_VERIFICATION) {
    long verify = X509_V_OK;
    curl_easy_getinfo(h, CURLINFO_SSL_VERIFYRESULT, &verify);
    msg = "refused the TLS certificate of " + o.peer + " at " + o.url + ": " +
          refused_certificate(verify, detail, o) + " (" + why + ")";
  } else if (rc == CURLE_SSL_CACERT_BADFILE && !o.ca_file.empty()) {
    return make_error(Errc::invalid_argument,
                      "cannot use the CA file " + o.ca_file + " (" + why + "); expected PEM CA certificates");
  } else if (rc == CURLE_SSL_CACERT_BADFILE) {
    msg = "cannot verify " + o.peer + " at " + o.url + ": the system CA store cannot be read (" + why +
          "); install Debian's ca-certificates, or " + o.ca_hint;
  } else if (is_https(o.url) && rc == CURLE_SSL_CONNECT_ERROR) {
    msg = "the TLS handshake with " + o.peer + " at " + o.url + " failed (" + why +
          "); if the server serves plain HTTP, use an http:// URL";
  } else if (!is_https(o.url) && (rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR)) {
    msg = o.peer + " at " + o.url + " closed the connection without an answer (" + why +
          "); if the server serves HTTPS, use an https:// URL";
  } else {
    msg = "cannot reach " + o.peer + " at " + o.url + " (" + why + "); " + o.hint;
  }
  return make_error(Errc::io_error, msg);
}

// An unreadable ca_file is the caller's mistake, named before connecting.
Status check_ca_file(const std::string& path) {
  if (path.empty()) return {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return make_error(Errc::invalid_argument,
                      "cannot read the CA file " + path + ": " + std::strerror(errno));
  ::close(fd);
  return {};
}

}  // namespace

Client::Client(const std::string& server, const std::string& token)
    : Client(ClientOptions{.url = server, .token = token}) {}

Client::Client(ClientOptions opts) : opts_(std::move(opts)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
}

Client::~Client() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<ClientResponse> Client::call_raw(const std::string& method, const std::string& path,
                                        const std::string& body, const std::string& content_type) {
  if (method != "GET" && method != "POST" && method != "PUT" && method != "PATCH" && method != "DELETE")
    return make_error(Errc::invalid_argument, "unsupported method " + method);
  auto* h = static_cast<CURL*>(curl_);
  if (!h) return make_error(Errc::io_error, "cannot initialise libcurl");
  if (auto st = check_ca_file(opts_.ca_file); !st.ok()) return st.error();
  curl_easy_reset(h);  // keeps the live connection
  const std::string url = opts_.url + path;
  BodySink received{{}, opts_.max_body};
  char detail[CURL_ERROR_SIZE] = "";
  HeaderList headers;
  headers.add("Expect:");  // no 100-continue round trip
  if (!opts_.token.empty()) headers.add("Authorization: Bearer " + opts_.token);
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, static_cast<long>(opts_.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(opts_.timeout.count()));
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);
  // Verification is never turned off: the chain against ca_file (only it:
  // no CA directory besides) or the system store, the name against the URL.
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  if (!opts_.ca_file.empty()) {
    curl_easy_setopt(h, CURLOPT_CAINFO, opts_.ca_file.c_str());
    curl_easy_setopt(h, CURLOPT_CAPATH, nullptr);
  }
  if (!opts_.client_cert.empty()) {
    curl_easy_setopt(h, CURLOPT_SSLCERT, opts_.client_cert.c_str());
    curl_easy_setopt(h, CURLOPT_SSLKEY, opts_.client_key.c_str());
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &received);
  if (method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method != "DELETE" || !body.empty()) {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      headers.add("Content-Type: " + content_type);
    }
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.list);
  const CURLcode rc = curl_easy_perform(h);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);  // `detail` goes out of scope
  curl_off_t connected_us = 0;
  if (rc == CURLE_OPERATION_TIMEDOUT &&
      curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected_us) == CURLE_OK && connected_us > 0) {
    Error e = make_error(Errc::io_error, opts_.peer + " at " + opts_.url + " did not answer within " +
                                             std::to_string(opts_.timeout.count()) + " s");
    e.backend_code = CURLE_OPERATION_TIMEDOUT;
    return e;
  }
  if (received.over) {
    Error e = make_error(Errc::io_error,
                         opts_.peer + " at " + opts_.url + " answered with more than " +
                             std::to_string(opts_.max_body >> 20) +
                             " MiB; not read (no virtcap answer is that large: is it the right server?)");
    e.backend_code = CURLE_WRITE_ERROR;
    return e;
  }
  if (rc != CURLE_OK) return transport_error(rc, h, detail, opts_);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  ClientResponse out;
  out.status = static_cast<int>(status);
  out.raw = std::move(received.data);
  if (!out.raw.empty()) {
    out.body = nlohmann::json::parse(out.raw, nullptr, false);
    if (out.body.is_discarded()) out.body = nullptr;
  }
  return out;
}

bool answer_too_large(const Error& e) {
  return e.code == Errc::io_error && e.backend_code == CURLE_WRITE_ERROR;
}

bool answered_late(const Error& e) {
  return e.code == Errc::io_error && e.backend_code == CURLE_OPERATION_TIMEDOUT;
}

Result<ClientResponse> Client::call(const std::string& method, const std::string& path,
                                    const nlohmann::json* body) {
  return call_raw(method, path, body ? dump_json(*body) : std::string());
}

Result<nlohmann::json> Client::request(const std::string& method, const std::string& path,
                                       const nlohmann::json* body) {
  auto r = call(method, path, body);
  if (!r.ok()) return r.error();
  if (r->status >= 200 && r->status < 300) return r->body;
  Error e;
  e.code = Errc::internal;
  e.message = "HTTP " + std::to_string(r->status) + " from " + opts_.url;
  if (r->body.is_object() && r->body.contains("error") && r->body["error"].is_object()) {
    const auto& err = r->body["error"];
    // Only string fields are taken (value() would throw on another type).
    auto field = [&](const char* k, std::string def) {
      return err.contains(k) && err[k].is_string() ? err[k].get<std::string>() : def;
    };
    e.code = errc_from_string(field("code", "")).value_or(Errc::internal);
    e.message = field("message", e.message);
    e.capability = field("capability", "");
    e.operation = field("operation", "");
    e.driver = field("driver", "");
  }
  return e;
}

}  // namespace virtcap::http
