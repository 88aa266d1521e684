// The options every client command shares, for the agent's commands (`virtcap
// list`, `boot`, ...) and the fleet service's (`virtcap hosts`, `traits`):
// where the server is, how to authenticate and verify it, and how to print.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "virtcap/error.h"

namespace virtcap::cli {

// What the shared options parse into.
struct ClientFlags {
  std::string server, token, ca_file;
  std::string format = "table";      // table|json|value (--json = json)
  bool json = false;                 // --json
  std::vector<std::string> columns;  // -c: the columns to show
};

// What differs between the two families of client commands.
struct ClientPeer {
  std::string name;            // "agent", "fleet service" (in help text)
  const char* server_env;      // the server URL's environment variable
  const char* token_env;       // the bearer token's
  std::string default_server;  // without --server or its variable
};

inline constexpr const char* kCaFileEnv = "VIRTCAP_CA_FILE";

// The environment variable's value when set and not empty, else fallback.
std::string env_or(const char* name, const std::string& fallback);

// server, token and ca_file from the peer's environment variables (else the
// defaults), before the command line overrides them.
ClientFlags client_flags_from_env(const ClientPeer& peer);

// --server, --token, --ca-file, -f/--format, --json and -c/--column on `sub`.
void add_client_options(CLI::App* sub, ClientFlags& into, const ClientPeer& peer);

// --server checked and normalised: http(s)://HOST[:PORT] (port 1-65535),
// trailing slashes dropped; invalid_argument saying what is expected, with
// the peer's default as the example, for anything else.
Result<std::string> server_url(const std::string& raw, const ClientPeer& peer);

}  // namespace virtcap::cli
