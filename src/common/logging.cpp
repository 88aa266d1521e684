#include "common/logging.h"

#include <spdlog/details/os.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/json_text.h"
#include "common/utf8.h"

namespace virtcap::logging {
namespace {

constexpr const char* kTextPattern = "%Y-%m-%dT%H:%M:%S.%e%z %l %v";

// The fields of the line being logged on this thread (the logger is
// synchronous: the sink formats on the caller's thread).
thread_local const Fields* t_fields = nullptr;

// "2026-11-26T09:01:36.123+00:00"
std::string iso8601(spdlog::log_clock::time_point tp) {
  const auto t = spdlog::log_clock::to_time_t(tp);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count() % 1000;
  struct tm tm {};
  ::localtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char off[24];
  const long gmtoff = std::labs(tm.tm_gmtoff) % 86400;  // |offset| < 1 day
  std::snprintf(off, sizeof off, "%c%02ld:%02ld", tm.tm_gmtoff < 0 ? '-' : '+', gmtoff / 3600,
                (gmtoff % 3600) / 60);
  char out[96];
  std::snprintf(out, sizeof out, "%s.%03lld%s", buf, static_cast<long long>(ms), off);
  return out;
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const nlohmann::json line{
        {"time", iso8601(msg.time)},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"logger", utf8_safe(std::string_view(msg.logger_name.data(), msg.logger_name.size()))},
        {"pid", static_cast<long long>(::getpid())},
        {"thread", static_cast<unsigned long long>(msg.thread_id)},
        {"message", utf8_safe(std::string_view(msg.payload.data(), msg.payload.size()))}};
    nlohmann::json out = line;
    if (t_fields)
      for (const auto& [name, value] : *t_fields)
        if (!line.contains(name)) out[name] = value;
    const std::string text = dump_json(out) + "\n";
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// Writes to stderr or to a file it can reopen.
class Sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  Status open(const std::string& file) {
    std::lock_guard lock(mutex_);
    FILE* f = stderr;
    if (!file.empty()) {
      f = std::fopen(file.c_str(), "ae");  // append, O_CLOEXEC
      if (!f) return make_error(Errc::io_error, "cannot open log file " + file + ": " + std::strerror(errno));
    }
    if (out_ && out_ != stderr) std::fclose(out_);
    out_ = f;
    return {};
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::fwrite(buf.data(), 1, buf.size(), out_ ? out_ : stderr);
    std::fflush(out_ ? out_ : stderr);
  }
  void flush_() override { std::fflush(out_ ? out_ : stderr); }

 private:
  FILE* out_ = nullptr;
};

std::shared_ptr<Sink>& the_sink() {
  static std::shared_ptr<Sink> sink = std::make_shared<Sink>();
  return sink;
}

spdlog::level::level_enum spdlog_level(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warning: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::critical: return spdlog::level::critical;
    case LogLevel::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

Status apply(const Options& opts) {
  const auto level = spdlog_level(opts.level);
  if (Status st = the_sink()->open(opts.file); !st.ok()) return st;
  if (opts.format == LogFormat::json)
    the_sink()->set_formatter(std::make_unique<JsonFormatter>());
  else
    the_sink()->set_formatter(std::make_unique<spdlog::pattern_formatter>(kTextPattern));
  spdlog::set_level(level);
  return {};
}

}  // namespace

Status setup(const Options& opts) {
  if (!spdlog::get("virtcap")) {
    auto logger = std::make_shared<spdlog::logger>("virtcap", the_sink());
    spdlog::register_logger(logger);
    spdlog::set_default_logger(logger);
  }
  return apply(opts);
}

Status reopen(const Options& opts) { return apply(opts); }

void info(const std::string& message, const Fields& fields) {
  t_fields = &fields;
  spdlog::info("{}", message);  // spdlog reports its own errors; it does not throw here
  t_fields = nullptr;
}

}  // namespace virtcap::logging
