#include "cli/client_options.h"

#include <cctype>
#include <cstdlib>

namespace virtcap::cli {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

ClientFlags client_flags_from_env(const ClientPeer& peer) {
  ClientFlags f;
  f.server = env_or(peer.server_env, peer.default_server);
  f.token = env_or(peer.token_env, "");
  f.ca_file = env_or(kCaFileEnv, "");
  return f;
}

void add_client_options(CLI::App* sub, ClientFlags& into, const ClientPeer& peer) {
  std::string title = peer.name;
  if (!title.empty()) title[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(title[0])));
  sub->add_option("--server", into.server, title + " URL (env " + peer.server_env + ")")
      ->capture_default_str();
  sub->add_option("--token", into.token, std::string("Bearer token (env ") + peer.token_env + ")");
  sub->add_option("--ca-file", into.ca_file,
                  "PEM CA certificate(s) to verify an https:// " + peer.name +
                      " against (default: the system CA store; env " + kCaFileEnv + ")");
  sub->add_option("-f,--format", into.format,
                  "Output: table (sized to fit), json (the API's JSON), value (bare values)")
      ->check(CLI::IsMember({"table", "json", "value"}))
      ->capture_default_str();
  sub->add_flag("--json", into.json, "Same as --format json");
  sub->add_option("-c,--column", into.columns,
                  "Show only this column (repeatable; a header or a field name)");
}

Result<std::string> server_url(const std::string& raw, const ClientPeer& peer) {
  std::string url = raw;
  while (url.size() > 1 && url.back() == '/') url.pop_back();
  const auto scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  const std::string rest = scheme_end == std::string::npos ? "" : url.substr(scheme_end + 3);
  const bool ok = (scheme == "http" || scheme == "https") && !rest.empty() &&
                  rest.find_first_of("/?#@ ") == std::string::npos && rest.front() != ':';
  if (!ok) {
    const bool vowel = !peer.name.empty() && std::string_view("aeiou").find(peer.name[0]) != std::string_view::npos;
    return make_error(Errc::invalid_argument, "--server '" + raw + "' is not " + (vowel ? "an " : "a ") + peer.name +
                                                  " URL; expected http://HOST[:PORT] (or https://), e.g. " +
                                                  peer.default_server);
  }
  if (rest.find(']') == std::string::npos || rest.rfind(':') > rest.find(']')) {
    const auto colon = rest.rfind(':');
    const bool bracketed = rest.find(']') != std::string::npos;
    if (colon != std::string::npos && (bracketed || rest.find(':') == colon)) {
      const std::string port = rest.substr(colon + 1);
      if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(port) < 1 || std::stoi(port) > 65535)
        return make_error(Errc::invalid_argument, "--server '" + raw + "': the port must be a number from 1 to 65535");
    }
  }
  return url;
}

}  // namespace virtcap::cli
