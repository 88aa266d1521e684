// The client side of the agent's API, used by the `virtcap` client commands
// and by the integration tests (the real client, not a stand-in). On libcurl
// (OpenSSL): http and https only. One Client per thread.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "virtcap/error.h"

namespace virtcap::api {

inline constexpr const char* kDefaultServer = "http://127.0.0.1:8774";

struct Response {
  int status = 0;
  nlohmann::json body;   // parsed JSON (null for an empty body)
  std::string raw;       // the body as received
};

// A call's transport error for an agent that was reached but did not answer
// within the client's timeout (the operation may still finish there).
bool answered_late(const Error& e);

class Client {
 public:
  // server: "http://HOST:PORT"; token: sent as a bearer token when non-empty.
  Client(const std::string& server, const std::string& token = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Any status is a Response; only a transport failure is an Error
  // (hypervisor_unavailable is not used: io_error names the server).
  Result<Response> call(const std::string& method, const std::string& path,
                        const nlohmann::json* body = nullptr);
  // As call(), but a non-2xx status becomes an Error carrying the API's
  // code and message.
  Result<nlohmann::json> request(const std::string& method, const std::string& path,
                                 const nlohmann::json* body = nullptr);
  // Sends raw bytes as the body (tests of malformed input).
  Result<Response> call_raw(const std::string& method, const std::string& path, const std::string& body,
                            const std::string& content_type = "application/json");

  const std::string& server() const { return server_; }
  // How long a call may take once connected (default 300 s: a cold spawn or
  // an image-cache pass can take a while).
  void set_timeout(std::chrono::seconds t) { timeout_ = t; }

 private:
  std::string server_;
  std::string token_;
  std::chrono::seconds timeout_{300};
  void* curl_ = nullptr;  // a libcurl easy handle: keeps its connection alive between calls
};

}  // namespace virtcap::api
