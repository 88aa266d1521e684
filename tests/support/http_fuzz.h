// The property every HTTP input must keep (issue 11, point 7): the server
// answers with well-formed HTTP or closes the connection; it never hangs
// and never crashes. Shared by the libFuzzer target (tests/fuzz/) and the
// bounded random-input test of the normal build.
#pragma once

#include <cctype>
#include <string>

#include "support/raw_http.h"

namespace virtcap::testing {

// "" when the answer is acceptable, else what was wrong.
inline std::string check_http_answer(int port, const std::string& input) {
  RawConnection c(port);
  if (!c.ok()) return "cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + c.error();
  c.send(input, std::chrono::seconds(5));  // the server may close early: fine
  // Longer than the server's idle timeout (10 s): a waiting server must
  // still close by then.
  const auto a = c.finish(std::chrono::seconds(15));
  if (a.timed_out) return "neither an answer nor a close within 15 s";
  if (a.text.empty()) return "";
  const std::string& t = a.text;
  const bool status_line =
      t.size() >= 13 && (t.compare(0, 9, "HTTP/1.1 ") == 0 || t.compare(0, 9, "HTTP/1.0 ") == 0) &&
      std::isdigit(static_cast<unsigned char>(t[9])) && std::isdigit(static_cast<unsigned char>(t[10])) &&
      std::isdigit(static_cast<unsigned char>(t[11])) && t[12] == ' ';
  if (!status_line || t.find("\r\n\r\n") == std::string::npos) return "malformed answer: " + t.substr(0, 200);
  return "";
}

}  // namespace virtcap::testing
