// How an Error becomes an HTTP answer, one rule for every virtcap server
// (the agent API, the fleet service): its status and its JSON body.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "http/server.h"
#include "virtcap/error.h"

namespace virtcap::http {

// {"error": {"code", "message", ["capability", "operation", "driver"]}}
nlohmann::json error_json(const Error& e);
// The HTTP status for an error code (docs/api.md).
int http_status(Errc code);
// The error's status and body; with retry_after, a store_unavailable error
// (503) also says when to retry (Retry-After, whole seconds).
Response send_error(const Error& e, std::optional<std::chrono::seconds> retry_after = std::nullopt);

}  // namespace virtcap::http
