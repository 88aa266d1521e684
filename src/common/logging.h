// Logging for the agent and the CLI: text or JSON lines, ISO 8601 times with
// the UTC offset, to stderr or a file that SIGHUP reopens (for logrotate).
#pragma once

#include <string>

#include "virtcap/error.h"

namespace virtcap::logging {

struct Options {
  std::string level = "info";    // trace|debug|info|warning|error|critical|off
  std::string format = "text";   // text|json
  std::string file;              // empty: stderr
};

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

}  // namespace virtcap::logging
