// Logging for the agent and the CLI: text or JSON lines, ISO 8601 times with
// the UTC offset, to stderr or a file that SIGHUP reopens (for logrotate).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/log_options.h"
#include "virtcap/error.h"

namespace virtcap::logging {

// Installs the process-wide logger "virtcap". Text lines look like
//   2026-11-26T09:01:36.123+00:00 info message
// JSON lines like
//   {"time":"2026-11-26T09:01:36.123+00:00","level":"info","logger":"virtcap","pid":123,"message":"..."}
// (every string valid UTF-8; a message that is not is escaped with U+FFFD).
Status setup(const Options& opts);

// SIGHUP: reopens the log file (after logrotate moved it) and applies a new
// level and format. The logger stays the same object: other threads keep
// logging throughout.
Status reopen(const Options& opts);

// Named values a line carries besides its message: in JSON format they are
// fields of the line (a name that is one of the line's own keys - time,
// level, logger, pid, thread, message - is left out); in text format only the
// message is written, so put what matters in it too.
using Fields = std::vector<std::pair<std::string, nlohmann::json>>;
void info(const std::string& message, const Fields& fields);

}  // namespace virtcap::logging
