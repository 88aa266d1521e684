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

}  // namespace virtcap::cli
