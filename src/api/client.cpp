#include "api/client.h"

#include <curl/curl.h>

#include <mutex>

#include "common/json_text.h"

namespace virtcap::api {

namespace {

Errc code_from(const std::string& s) {
  for (Errc c : {Errc::invalid_argument, Errc::not_found, Errc::already_exists, Errc::conflict,
                 Errc::capability_not_supported, Errc::hypervisor_unavailable, Errc::driver_error,
                 Errc::driver_load_failed, Errc::store_error, Errc::io_error})
    if (to_string(c) == s) return c;
  return Errc::internal;
}

size_t append_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct HeaderList {
  curl_slist* list = nullptr;
  void add(const std::string& h) { list = curl_slist_append(list, h.c_str()); }
  ~HeaderList() { curl_slist_free_all(list); }
};

}  // namespace

Client::Client(const std::string& server, const std::string& token) : server_(server), token_(token) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
}

Client::~Client() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<Response> Client::call_raw(const std::string& method, const std::string& path, const std::string& body,
                                  const std::string& content_type) {
  if (method != "GET" && method != "POST" && method != "PUT" && method != "PATCH" && method != "DELETE")
    return make_error(Errc::invalid_argument, "unsupported method " + method);
  auto* h = static_cast<CURL*>(curl_);
  if (!h) return make_error(Errc::io_error, "cannot initialise libcurl");
  curl_easy_reset(h);  // keeps the live connection
  const std::string url = server_ + path;
  std::string received;
  HeaderList headers;
  headers.add("Expect:");  // no 100-continue round trip
  if (!token_.empty()) headers.add("Authorization: Bearer " + token_);
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(timeout_.count()));
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
  curl_off_t connected_us = 0;
  if (rc == CURLE_OPERATION_TIMEDOUT && curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected_us) == CURLE_OK &&
      connected_us > 0) {
    Error e = make_error(Errc::io_error, "the virtcap agent at " + server_ + " did not answer within " +
                                             std::to_string(timeout_.count()) + " s");
    e.backend_code = CURLE_OPERATION_TIMEDOUT;
    return e;
  }
  if (rc != CURLE_OK)
    return make_error(Errc::io_error, "cannot reach the virtcap agent at " + server_ + " (" +
                                          curl_easy_strerror(rc) +
                                          "); is `virtcap agent` running? Set --server or VIRTCAP_SERVER");
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  Response out;
  out.status = static_cast<int>(status);
  out.raw = std::move(received);
  if (!out.raw.empty()) {
    out.body = nlohmann::json::parse(out.raw, nullptr, false);
    if (out.body.is_discarded()) out.body = nullptr;
  }
  return out;
}

bool answered_late(const Error& e) { return e.code == Errc::io_error && e.backend_code == CURLE_OPERATION_TIMEDOUT; }

Result<Response> Client::call(const std::string& method, const std::string& path, const nlohmann::json* body) {
  return call_raw(method, path, body ? dump_json(*body) : std::string());
}

Result<nlohmann::json> Client::request(const std::string& method, const std::string& path,
                                       const nlohmann::json* body) {
  auto r = call(method, path, body);
  if (!r) return r.error();
  if (r->status >= 200 && r->status < 300) return r->body;
  Error e;
  e.code = Errc::internal;
  e.message = "HTTP " + std::to_string(r->status) + " from " + server_;
  if (r->body.is_object() && r->body.contains("error") && r->body["error"].is_object()) {
    const auto& err = r->body["error"];
    e.code = code_from(err.value("code", ""));
    e.message = err.value("message", e.message);
    e.capability = err.value("capability", "");
    e.operation = err.value("operation", "");
    e.driver = err.value("driver", "");
  }
  return e;
}

}  // namespace virtcap::api
