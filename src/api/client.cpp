#include "api/client.h"

#include <httplib.h>

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
}  // namespace

Client::Client(const std::string& server, const std::string& token)
    : server_(server), token_(token), http_(std::make_unique<httplib::Client>(server)) {
  http_->set_connection_timeout(5, 0);
  http_->set_tcp_nodelay(true);
  http_->set_read_timeout(300, 0);  // an image-cache pass or a cold spawn can take a while
  http_->set_write_timeout(30, 0);
  if (!token.empty()) http_->set_bearer_token_auth(token.c_str());
}

Client::~Client() = default;

Result<Response> Client::call_raw(const std::string& method, const std::string& path, const std::string& body,
                                  const std::string& content_type) {
  httplib::Result r{nullptr, httplib::Error::Unknown};
  if (method == "GET") r = http_->Get(path.c_str());
  else if (method == "POST") r = http_->Post(path.c_str(), body, content_type.c_str());
  else if (method == "PUT") r = http_->Put(path.c_str(), body, content_type.c_str());
  else if (method == "PATCH") r = http_->Patch(path.c_str(), body, content_type.c_str());
  else if (method == "DELETE") r = http_->Delete(path.c_str(), body, content_type.c_str());
  else return make_error(Errc::invalid_argument, "unsupported method " + method);
  if (!r)
    return make_error(Errc::io_error, "cannot reach the virtcap agent at " + server_ + " (" +
                                          httplib::to_string(r.error()) +
                                          "); is `virtcap agent` running? Set --server or VIRTCAP_SERVER");
  Response out;
  out.status = r->status;
  out.raw = r->body;
  if (!r->body.empty()) {
    out.body = nlohmann::json::parse(r->body, nullptr, false);
    if (out.body.is_discarded()) out.body = nullptr;
  }
  return out;
}

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
