#include "http/errors.h"

#include <string>

namespace virtcap::http {

nlohmann::json error_json(const Error& e) {
  nlohmann::json err = {{"code", std::string(to_string(e.code))}, {"message", e.message}};
  if (!e.capability.empty()) err["capability"] = e.capability;
  if (!e.operation.empty()) err["operation"] = e.operation;
  if (!e.driver.empty()) err["driver"] = e.driver;
  return {{"error", err}};
}

int http_status(Errc code) { return http_status_of(code); }

Response send_error(const Error& e, std::optional<std::chrono::seconds> retry_after) {
  Response r = json_response(http_status(e.code), error_json(e));
  if (retry_after && e.code == Errc::store_unavailable)
    r.headers.emplace_back("Retry-After", std::to_string(retry_after->count()));
  return r;
}

}  // namespace virtcap::http
