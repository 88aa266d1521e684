// What logging::setup is told: the level, format and file, the first two
// parsed once from the config into enums (config::Choice names them).
#pragma once

#include <string>

namespace virtcap::logging {

enum class LogLevel { trace, debug, info, warning, error, critical, off };
enum class LogFormat { text, json };

struct Options {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::text;
  std::string file;  // empty: stderr
};

}  // namespace virtcap::logging
