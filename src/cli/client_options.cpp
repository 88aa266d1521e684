#include "cli/client_options.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string_view>

#include "common/json_text.h"
#include "config/config.h"

namespace virtcap::cli {

using nlohmann::json;

int fail(const std::string& message, int code) {
  std::fprintf(stderr, "virtcap: %s\n", message.c_str());
  return code;
}

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return dump_json(v);
}

int exit_code_for_status(int status) {
  switch (status) {
    case 400:  // the server refused a value (range, shape): bad usage
    case 401:  // wrong or missing --token
    case 403:  // the credential's role may not do this (or a Host/Origin refused)
    case 411:
    case 413:
    case 414:  // a request line too long for the server (e.g. a huge --name)
    case 415: return kExitUsage;
    default: return kExitRuntime;
  }
}

namespace {

// The API's field names in `msg`, as whole words, replaced by the flags.
std::string in_user_words(std::string msg, const std::vector<std::pair<std::string, std::string>>& fields) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (const auto& [field, flag] : fields)
    for (auto at = msg.find(field); at != std::string::npos; at = msg.find(field, at + flag.size())) {
      const auto after = at + field.size();
      if ((at == 0 || !word(msg[at - 1])) && (after >= msg.size() || !word(msg[after])))
        msg.replace(at, field.size(), flag);
    }
  return msg;
}

void print_json_error(const ClientFlags& flags, const json& error) {
  if (flags.format == "json") std::cout << dump_json(error, 2) << "\n";
}

}  // namespace

namespace {
std::string g_last_server;  // the server of the last answer, for not_our_api
}  // namespace

const std::string& last_server() { return g_last_server; }

int not_our_api(const ClientFlags& flags, int status, const std::string& why) {
  std::string msg = "the server at " + (flags.server.empty() ? g_last_server : flags.server) +
                    " did not answer with virtcap's API";
  if (status)
    msg += " (HTTP " + std::to_string(status) + (why.empty() ? "" : ", " + why) + ")";
  else if (!why.empty())
    msg += " (" + why + ")";
  msg += "; is --server right?";
  print_json_error(flags, json{{"error", {{"code", "not_virtcap"}, {"message", msg}}}});
  return fail(msg, kExitRuntime);
}

std::optional<int> call_reported(http::Client& client, const ClientFlags& flags, const ClientPeer& peer,
                                 const std::string& method, const std::string& path, const json* body,
                                 http::ClientResponse& out, const CallWords& words) {
  auto r = client.call(method, path, body);
  if (!r.ok()) {
    // An unreadable --ca-file is a usage error (2); reached but no answer in
    // time, the operation failed from here (1) and may still finish on the
    // server; anything else is unreachable (3). The client's message names
    // the server and what to check.
    const bool usage = r.error().code == Errc::invalid_argument;
    const bool late = http::answered_late(r.error());
    const bool too_large = http::answer_too_large(r.error());  // reached, but not a virtcap answer: 1
    std::string msg = r.error().message;
    if (late) msg += peer.after_late;
    const char* code = usage       ? "invalid_argument"
                       : late      ? "timeout"
                       : too_large ? "not_virtcap"
                                   : "unreachable";
    print_json_error(flags, json{{"error", {{"code", code}, {"message", msg}}}});
    return fail(msg, usage ? kExitUsage : (late || too_large) ? kExitRuntime : kExitUnreachable);
  }
  out = std::move(*r);
  g_last_server = flags.server;
  if (out.status >= 200 && out.status < 300 && !out.body.is_object()) return not_our_api(flags, out.status);
  if ((out.status >= 200 && out.status < 300) ||
      (words.quiet_status != 0 && out.status == words.quiet_status))
    return std::nullopt;
  const std::string status = std::to_string(out.status);
  const bool api_error = out.body.is_object() && out.body.contains("error") && out.body["error"].is_object();
  print_json_error(flags, api_error
                              ? out.body
                              : json{{"error", {{"code", "http_" + status}, {"message", "HTTP " + status}}}});
  std::string msg = "HTTP " + status + " from " + flags.server;
  if (api_error) {
    const auto& e = out.body["error"];
    if (e.contains("message") && e["message"].is_string()) msg = e["message"].get<std::string>();
    if (e.contains("capability") && e["capability"].is_string())
      msg += " [capability: " + e["capability"].get<std::string>() + "]";
  }
  if (out.status == 401)
    msg += " (give the " + peer.name + "'s token with --token or " + peer.token_env + ")";
  if (words.hint_status != 0 && out.status == words.hint_status) msg += " " + words.hint;
  return fail(in_user_words(msg, words.field_flags), exit_code_for_status(out.status));
}

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
  const bool vowel =
      !peer.name.empty() && std::string_view("aeiou").find(peer.name[0]) != std::string_view::npos;
  const Error not_a_url =
      make_error(Errc::invalid_argument,
                 "--server '" + raw + "' is not " + (vowel ? "an " : "a ") + peer.name +
                     " URL; expected http://HOST[:PORT] (or https://), e.g. " + peer.default_server);
  auto url = config::parse_http_url(raw);
  if (url.ok()) return url->normalised;
  if (url.error() == config::UrlError::bad_port)
    return make_error(Errc::invalid_argument,
                      "--server '" + raw + "': the port must be a number from 1 to 65535");
  return not_a_url;
}

}  // namespace virtcap::cli
