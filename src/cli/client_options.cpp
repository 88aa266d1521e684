#include "cli/client_options.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

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
  const bool vowel = !peer.name.empty() && std::string_view("aeiou").find(peer.name[0]) != std::string_view::npos;
  const Error not_a_url = make_error(Errc::invalid_argument, "--server '" + raw + "' is not " + (vowel ? "an " : "a ") +
                                                                 peer.name + " URL; expected http://HOST[:PORT] (or https://), e.g. " +
                                                                 peer.default_server);
  std::string url = raw;
  while (url.size() > 1 && url.back() == '/') url.pop_back();
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return not_a_url;
  std::string scheme = url.substr(0, scheme_end);
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string rest = url.substr(scheme_end + 3);
  if ((scheme != "http" && scheme != "https") || rest.empty()) return not_a_url;
  for (const char c : rest)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || std::string_view("/?#@").find(c) != std::string_view::npos)
      return not_a_url;
  // HOST is a name, an IPv4 address or a bracketed IPv6 address; one colon
  // at most outside brackets, before the port.
  std::optional<std::string_view> port;  // what follows the colon, when there is one
  if (rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos || close == 1) return not_a_url;
    const std::string_view after = std::string_view(rest).substr(close + 1);
    if (!after.empty() && after.front() != ':') return not_a_url;
    if (!after.empty()) port = after.substr(1);
  } else {
    const auto colon = rest.find(':');
    if (colon == 0 || rest.find_first_of("[]") != std::string::npos ||
        (colon != std::string::npos && rest.find(':', colon + 1) != std::string::npos))
      return not_a_url;
    if (colon != std::string::npos) port = std::string_view(rest).substr(colon + 1);
  }
  int number = 0;
  if (port && (port->empty() || port->size() > 5 ||
               std::from_chars(port->data(), port->data() + port->size(), number).ptr != port->data() + port->size() ||
               number < 1 || number > 65535))
    return make_error(Errc::invalid_argument, "--server '" + raw + "': the port must be a number from 1 to 65535");
  return scheme + url.substr(scheme_end);
}

}  // namespace virtcap::cli
