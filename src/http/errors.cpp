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

int http_status(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return 400;
    case Errc::forbidden: return 403;
    case Errc::not_found: return 404;
    case Errc::already_exists:
    case Errc::conflict:
    case Errc::capability_not_supported: return 409;
    case Errc::hypervisor_unavailable:
    case Errc::store_unavailable: return 503;
    default: return 500;
  }
}

Response send_error(const Error& e, std::optional<std::chrono::seconds> retry_after) {
  Response r = json_response(http_status(e.code), error_json(e));
  if (retry_after && e.code == Errc::store_unavailable)
    r.headers.emplace_back("Retry-After", std::to_string(retry_after->count()));
  return r;
}

}  // namespace virtcap::http
