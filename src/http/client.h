// The client side of virtcap's HTTP/JSON servers (the agent API, the fleet
// service), used by the `virtcap` client commands, the fleet reporter and the
// integration tests (the real client, not a stand-in). On libcurl (OpenSSL):
// http and https only; an https server is always verified (its chain against
// ca_file or the system CA store, and its name against the URL's host).
// One Client per thread.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "virtcap/error.h"

namespace virtcap::http {

inline constexpr const char* kDefaultServer = "http://127.0.0.1:8774";
// The default cap on an answer's body (ClientOptions::max_body): 16 MiB.
inline constexpr std::size_t kDefaultMaxBody = std::size_t{16} << 20;

struct ClientResponse {
  int status = 0;
  nlohmann::json body;  // parsed JSON (null for an empty body)
  std::string raw;      // the body as received
};

// How a client reaches a server.
struct ClientOptions {
  std::string url{};      // "http://HOST:PORT" or "https://HOST:PORT"
  std::string token{};    // sent as a bearer token when non-empty
  std::string ca_file{};  // https: PEM CA certificate(s) to verify against; empty: the system CA store
  // https: a PEM client certificate and its unencrypted key, presented when set.
  std::string client_cert{}, client_key{};
  std::chrono::seconds timeout{300};        // a whole request (an image-cache pass can take a while)
  std::chrono::seconds connect_timeout{5};  // connecting, TLS handshake included
  // The longest answer read: a larger one is an error, never buffered whole
  // (virtcap's answers are far smaller; list pages are at most 1 MiB).
  std::size_t max_body = kDefaultMaxBody;
  // Transport errors name the server as `peer` and end with `hint`; an
  // unknown-CA refusal ends with `ca_hint`.
  std::string peer = "the virtcap agent";
  std::string hint = "is `virtcap agent` running? Set --server or VIRTCAP_SERVER";
  std::string ca_hint = "give the CA's certificate with --ca-file or VIRTCAP_CA_FILE";
};

// A call's transport error for a server that was reached but did not answer
// within the client's timeout (the operation may still finish there).
bool answered_late(const Error& e);
// A call's error for an answer larger than ClientOptions::max_body.
bool answer_too_large(const Error& e);

class Client {
 public:
  explicit Client(ClientOptions opts);
  // server: "http://HOST:PORT"; token: sent as a bearer token when non-empty.
  Client(const std::string& server, const std::string& token = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Any status is a ClientResponse; only a transport failure is an Error:
  // io_error naming the server and the reason (for a refused certificate:
  // unknown CA, expired, not yet valid, hostname mismatch), or
  // invalid_argument for an unreadable ca_file.
  Result<ClientResponse> call(const std::string& method, const std::string& path,
                              const nlohmann::json* body = nullptr);
  // As call(), but a non-2xx status becomes an Error carrying the API's
  // code and message.
  Result<nlohmann::json> request(const std::string& method, const std::string& path,
                                 const nlohmann::json* body = nullptr);
  // Sends raw bytes as the body (tests of malformed input).
  Result<ClientResponse> call_raw(const std::string& method, const std::string& path, const std::string& body,
                                  const std::string& content_type = "application/json");

  const std::string& server() const { return opts_.url; }
  // How long a call may take once connected (ClientOptions::timeout).
  void set_timeout(std::chrono::seconds t) { opts_.timeout = t; }

 private:
  ClientOptions opts_;
  void* curl_ = nullptr;  // a libcurl easy handle: keeps its connection alive between calls
};

}  // namespace virtcap::http
