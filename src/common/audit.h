// The audit trail: one info line per state-changing operation (boot, delete,
// reboot, attach/detach an interface, an image-cache removal, a reconcile
// fix) with the operation, the instance's uuid and name, the outcome (ok, or
// failed with the reason) and the duration in ms. Text format:
//   audit operation=reboot uuid=… name=web-1 outcome=failed duration_ms=3 reason="not_found: …"
// JSON format: the same message, and each of those as a field of the line
// ("audit": true marks it), so a log shipper needs no parsing.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/logging.h"
#include "virtcap/error.h"

namespace virtcap::audit {

// Times one operation from construction and logs its line once: done(),
// fail() or ok(); a scope that ends without an outcome (an exception) logs
// failed. dismiss() when nothing was attempted after all (no line).
class Scope {
 public:
  explicit Scope(std::string_view operation, std::string uuid = {}, std::string name = {});
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  void instance(std::string uuid, std::string name);
  // An extra field, e.g. file, bytes, from, to.
  void field(std::string key, nlohmann::json value);

  void ok() { log("ok", ""); }
  Error fail(Error e) {
    log("failed", e.describe());
    return e;
  }
  void failed(const std::string& reason) { log("failed", reason); }
  // Logs a Result's or Status's outcome and hands it back.
  template <class R>
  R done(R result) {
    if (result.ok())
      ok();
    else
      failed(result.error().describe());
    return result;
  }
  void dismiss() { logged_ = true; }

 private:
  void log(std::string_view outcome, const std::string& reason);
  std::string operation_, uuid_, name_;
  logging::Fields extra_;
  std::chrono::steady_clock::time_point start_;
  bool logged_ = false;
};

}  // namespace virtcap::audit
