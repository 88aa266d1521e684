// What every client command shares, for the agent's commands (`virtcap
// list`, `boot`, ...) and the fleet service's (`virtcap hosts`, `traits`):
// where the server is, how to authenticate and verify it, how to print, and
// one way to report a failed call (message, JSON error, exit code).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/client.h"
#include "virtcap/error.h"

namespace virtcap::cli {

// Exit codes of every virtcap command (README "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;      // the operation failed
inline constexpr int kExitUsage = 2;        // bad usage or configuration; nothing was changed
inline constexpr int kExitUnreachable = 3;  // a client command could not reach its server

// "virtcap: MESSAGE" on stderr; returns `code`.
int fail(const std::string& message, int code = kExitRuntime);
struct ClientFlags;
// Exit 1, "the server at URL did not answer with virtcap's API": a 2xx that
// is not a JSON object, or an object of the wrong shape (`why`). With
// --json, the same as an error object on stdout.
int not_our_api(const ClientFlags& flags, int status = 0, const std::string& why = "");
// The server of the last answer call_reported read (empty before one).
const std::string& last_server();

// A JSON value as printed in a table cell or a message: "-" for null, a
// string as it is, anything else as compact JSON.
std::string text(const nlohmann::json& v);

// The exit code of a non-2xx answer (README "Exit codes").
int exit_code_for_status(int status);

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
  std::string after_late;      // appended to a reached-but-too-late failure: where to see how it ended
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

// What a command adds to the shared report of a failed call.
struct CallWords {
  // The API's field names in a message, replaced by the flags the user typed.
  std::vector<std::pair<std::string, std::string>> field_flags{};
  // A status answered without a report (the caller handles it), e.g. a 409
  // that will be retried; 0: none.
  int quiet_status = 0;
  // Appended to the message of a `hint_status` answer.
  int hint_status = 0;
  std::string hint{};
};

// One call, reported the one way every client command reports: on a 2xx
// answer (or `words.quiet_status`), nullopt and the answer in `out`.
// Otherwise the error goes to stdout as the API's JSON error with --format
// json, and to stderr as "virtcap: MESSAGE" always; the exit code is
// returned: 2 for a usage mistake (an unreadable --ca-file, a 400), 3 for an
// unreachable server, 1 for an answer that came too late or any other
// failure.
std::optional<int> call_reported(http::Client& client, const ClientFlags& flags, const ClientPeer& peer,
                                 const std::string& method, const std::string& path,
                                 const nlohmann::json* body, http::ClientResponse& out,
                                 const CallWords& words = {});

}  // namespace virtcap::cli
