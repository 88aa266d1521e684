// virtcap's configuration: one declaration per option (section, type, key,
// default, check, doc), from which the Config struct, the TOML loader with its
// validation, `virtcap config show` and docs/config.md are generated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/log_options.h"
#include "virtcap/error.h"

namespace virtcap::config {

// Finite choices, each parsed once (where the file is read) into an enum; a
// name that is not allowed is an error listing the allowed ones.
// Choice<E>::kNames gives each value its name, in the order docs list them.
using logging::LogFormat;
using logging::LogLevel;
enum class OverlayWriter { native, qemu_img };
enum class StoreBackend { sqlite, memory };
enum class AnonymousRole { none, reader, operator_ };

template <class E>
struct Choice;
template <>
struct Choice<LogLevel> {
  static constexpr std::pair<LogLevel, std::string_view> kNames[] = {
      {LogLevel::trace, "trace"},     {LogLevel::debug, "debug"}, {LogLevel::info, "info"},
      {LogLevel::warning, "warning"}, {LogLevel::error, "error"}, {LogLevel::critical, "critical"},
      {LogLevel::off, "off"}};
};
template <>
struct Choice<LogFormat> {
  static constexpr std::pair<LogFormat, std::string_view> kNames[] = {{LogFormat::text, "text"},
                                                                      {LogFormat::json, "json"}};
};
template <>
struct Choice<OverlayWriter> {
  static constexpr std::pair<OverlayWriter, std::string_view> kNames[] = {
      {OverlayWriter::native, "native"}, {OverlayWriter::qemu_img, "qemu-img"}};
};
template <>
struct Choice<StoreBackend> {
  static constexpr std::pair<StoreBackend, std::string_view> kNames[] = {{StoreBackend::sqlite, "sqlite"},
                                                                         {StoreBackend::memory, "memory"}};
};
template <>
struct Choice<AnonymousRole> {
  static constexpr std::pair<AnonymousRole, std::string_view> kNames[] = {
      {AnonymousRole::none, "none"},
      {AnonymousRole::reader, "reader"},
      {AnonymousRole::operator_, "operator"}};
};

template <class E>
concept ChoiceEnum = std::is_enum_v<E> && requires {
  Choice<E>::kNames;
};

template <ChoiceEnum E>
constexpr std::string_view to_string(E v) {
  for (const auto& [value, name] : Choice<E>::kNames)
    if (value == v) return name;
  return "?";
}

template <ChoiceEnum E>
constexpr std::optional<E> parse_choice(std::string_view name) {
  for (const auto& [value, n] : Choice<E>::kNames)
    if (n == name) return value;
  return std::nullopt;
}

// Value checks. Each returns an error text ("expected ...") for a bad value.
namespace check {
struct any {
  std::string describe() const { return ""; }
  template <class T>
  std::optional<std::string> operator()(const T&) const {
    return std::nullopt;
  }
};
struct range {
  constexpr range(std::int64_t lo_, std::int64_t hi_) : lo(lo_), hi(hi_) {}
  std::int64_t lo, hi;
  std::string describe() const;
  std::optional<std::string> operator()(std::int64_t v) const;
};
// A finite number > 0 and <= hi (allocation ratios). TOML floats and
// integers both read as this type.
struct positive_number {
  constexpr explicit positive_number(double hi_) : hi(hi_) {}
  double hi;
  std::string describe() const;
  std::optional<std::string> operator()(double v) const;
};
// Also normalises the value where it enters: no trailing slash, no "." or
// ".." components, symlinks resolved where the path exists.
struct abs_path {
  bool allow_empty = false;
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
struct dir_name {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
// A finite choice (an enum with Choice names): the name is checked, and
// turned into the enum, as the file is read.
template <ChoiceEnum E>
struct choice {
  std::string describe() const {
    std::string out = "one of: ";
    for (const auto& [value, name] : Choice<E>::kNames) (out += name) += ',';
    out.pop_back();
    return out;
  }
  std::optional<std::string> operator()(E) const { return std::nullopt; }
};
struct listen_address {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
struct origin_list {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
struct non_empty {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
// Empty, or printable ASCII with no spaces: a blank token is no token.
struct token {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
// Empty, or http(s)://HOST[:PORT] (a trailing slash is fine).
struct http_url {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
// Empty, or the name of a group this host knows (getgrnam).
struct group_name {
  std::string describe() const;
  std::optional<std::string> operator()(const std::string& v) const;
};
}  // namespace check

// The TLS versions and suites a server offers by default (a GnuTLS priority
// string): TLS 1.3, and TLS 1.2 with ECDHE key exchange and AEAD ciphers
// only (no static RSA, no CBC, no SHA-1 MACs).
inline constexpr const char* kDefaultTlsPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-CIPHER-ALL:+AES-256-GCM:"
    "+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD";

// O(type, key, default, check, doc)
// clang-format off
#define VIRTCAP_CONFIG_DEFAULT(O)                                                                 \
  O(std::string, host, "", check::any{},                                                          \
    "Name of this compute host in the instance store. Empty: the machine's hostname.")            \
  O(std::string, state_path, "/var/lib/virtcap", check::abs_path{},                               \
    "Top-level directory for virtcap's state (instance store, instances).")                       \
  O(std::string, instances_path, "", check::abs_path{.allow_empty = true},                        \
    "Where instance directories and the image cache live. Empty: <state_path>/instances.")        \
  O(int, sync_power_state_interval, 600, check::range(-1, 31536000),                              \
    "Seconds between power-state syncs of the store against the driver; <= 0 disables.")          \
  O(int, periodic_fuzzy_delay, 60, check::range(0, 3600),                                         \
    "Upper bound, in seconds, of the random delay before each periodic task first runs "         \
    "(not the fleet report, which runs at start).")                                               \
  O(int, subprocess_timeout, 600, check::range(1, 86400),                                         \
    "Seconds a subprocess (qemu-img, ...) may run before it is killed and reaped.")               \
  O(bool, debug, false, check::any{}, "Log at debug level (overrides log_level).")                 \
  O(LogLevel, log_level, LogLevel::info, check::choice<LogLevel>{},                               \
    "Least severe level logged. SIGHUP re-reads it.")                                             \
  O(LogFormat, log_format, LogFormat::text, check::choice<LogFormat>{},                           \
    "text: ISO 8601 time, level, message; json: one JSON object per line (time, level, logger, pid, thread, message).") \
  O(std::string, log_file, "", check::abs_path{.allow_empty = true},                              \
    "Log to this file (appended; SIGHUP reopens it, for logrotate). Empty: standard error.")

#define VIRTCAP_CONFIG_COMPUTE(O)                                                                 \
  O(std::string, driver, "libvirt", check::non_empty{},                                           \
    "Virtualization driver to load (see `virtcap capabilities --help` for the list).")            \
  O(int, reserved_host_cpus, 0, check::range(0, 1048576),                                         \
    "CPUs kept for the host itself: the VCPU inventory's reserved amount in fleet reports.")      \
  O(int, reserved_host_memory_mb, 512, check::range(0, 1073741824),                               \
    "Memory (MiB) kept for the host itself: the MEMORY_MB inventory's reserved amount.")          \
  O(int, reserved_host_disk_mb, 0, check::range(0, 1073741824),                                   \
    "Disk (MiB) kept for the host itself: DISK_GB's reserved amount, rounded up to GiB.")      \
  O(double, cpu_allocation_ratio, 4.0, check::positive_number(1000),                              \
    "Virtual CPUs offered per physical CPU: VCPU free = (total - reserved) * ratio - used.")      \
  O(double, ram_allocation_ratio, 1.0, check::positive_number(1000),                              \
    "Memory overcommit: MEMORY_MB free = (total - reserved) * ratio - used. Above 1 relies on "    \
    "guests not touching all their memory.")                                                      \
  O(double, disk_allocation_ratio, 1.0, check::positive_number(1000),                             \
    "Disk overcommit: DISK_GB free = (total - reserved) * ratio - used (thin qcow2 overlays grow).")

#define VIRTCAP_CONFIG_IMAGE_CACHE(O)                                                             \
  O(int, manager_interval, 2400, check::range(-1, 31536000),                                      \
    "Seconds between image-cache passes; <= 0 disables the pass.")                                \
  O(std::string, subdirectory_name, "_base", check::dir_name{},                                   \
    "Directory under instances_path that holds cached base images.")                              \
  O(bool, remove_unused_base_images, true, check::any{},                                          \
    "Remove base images no instance uses; false only reports them.")                              \
  O(int, remove_unused_original_minimum_age_seconds, 86400, check::range(0, 315360000),           \
    "Minimum age before an unused original base image is removed.")                               \
  O(int, remove_unused_resized_minimum_age_seconds, 3600, check::range(0, 315360000),             \
    "Minimum age before an unused resized base image is removed.")                               \
  O(int, lock_timeout, 600, check::range(1, 86400),                                               \
    "Seconds a spawn's fetch, or a pass, waits for a base file's lock before failing (a pass then removes nothing).")

#define VIRTCAP_CONFIG_LIBVIRT(O)                                                                 \
  O(std::string, uri, "test:///default", check::non_empty{},                                      \
    "libvirt connection URI: test:///default (embedded, no daemon), qemu:///session, qemu:///system.") \
  O(std::string, network, "", check::any{},                                                       \
    "libvirt network for instance interfaces. Empty: user-mode networking (no host setup).")      \
  O(int, reconnect_max_backoff_seconds, 30, check::range(1, 3600),                                \
    "Longest wait between reconnection attempts after the hypervisor went away.")                 \
  O(OverlayWriter, overlay_writer, OverlayWriter::native, check::choice<OverlayWriter>{},          \
    "How spawn creates an instance's qcow2 overlay on its base: native (written in-process) or "  \
    "qemu-img (runs `qemu-img create`). Both fsync the overlay before renaming it into place.")   \
  O(std::string, disk_group, "", check::group_name{},                                             \
    "Group that may read base images, overlays and instance directories virtcap creates (modes "   \
    "0640/0750), for QEMU running as another user (qemu:///system). Empty: owner only (0600/0700).")

#define VIRTCAP_CONFIG_IMAGES(O)                                                                  \
  O(std::string, path, "", check::abs_path{.allow_empty = true},                                  \
    "Local image repository: <id>.raw and <id>.qcow2 files. Empty: <state_path>/images.")

// The connection limits of an HTTP server ([api] and [fleet_service] alike).
#define VIRTCAP_CONFIG_HTTP_LIMITS(O)                                                             \
  O(int, max_connections, 4096, check::range(16, 65536),                                          \
    "Connections held at once; more are closed as they are accepted. The open-file limit is raised " \
    "(soft, up to hard) at start to fit them.")                                                    \
  O(int, max_connections_per_address, 32, check::range(1, 256),                                   \
    "Connections one client address may hold at once (of max_connections in all); more are closed " \
    "as they are accepted, so one address cannot take every slot.")                                \
  O(int, request_header_timeout, 10, check::range(1, 3600),                                       \
    "Seconds a connection has for its request headers, counted from its accept (TLS handshake " \
    "included) or from the end of its previous request; bytes arriving do not extend it. Past it, " \
    "the connection is closed (slowloris).")

// The options every HTTP server has ([api] and [fleet_service] alike):
// where it listens, its token, TLS, connection limits and request guards.
// PORT is the default port, WHO names the server, TOKEN_DOC documents its
// token, CLEAR names what crosses the network in clear text without TLS.
#define VIRTCAP_CONFIG_HTTP_SERVER(O, PORT, WHO, TOKEN_DOC, CLEAR)                                 \
  O(std::string, listen, "127.0.0.1:" PORT, check::listen_address{},                              \
    "HOST:PORT " WHO " binds to (port 0: any free port). Non-loopback needs a token, and TLS "    \
    "unless allow_insecure.")                                                                     \
  O(std::string, token, "", check::token{}, TOKEN_DOC)                                            \
  O(std::string, tls_cert, "", check::abs_path{.allow_empty = true},                              \
    "PEM certificate chain (server certificate first). With tls_key: " WHO " serves HTTPS only. " \
    "An expired or not-yet-valid certificate, or one its key does not match, stops it at start (exit 2). " \
    "SIGHUP reads both files again: new connections get the new pair; a refused pair is logged, the old kept.") \
  O(std::string, tls_key, "", check::abs_path{.allow_empty = true},                               \
    "Unencrypted PEM private key of tls_cert. Set both or neither.")                              \
  O(std::string, tls_priority, kDefaultTlsPriority, check::non_empty{},                           \
    "TLS versions and suites offered (a GnuTLS priority string). Default: TLS 1.3, and TLS 1.2 with " \
    "ECDHE and AEAD only (no static RSA, CBC or SHA-1). Checked at start.")                        \
  VIRTCAP_CONFIG_HTTP_LIMITS(O)                                                                   \
  O(bool, allow_insecure, false, check::any{},                                                    \
    "Serve plain HTTP on a non-loopback listen address (" CLEAR " the network in clear text); "    \
    "logs a warning at every start. Without it such a listen is refused (exit 2).")               \
  O(std::string, allowed_origins, "", check::origin_list{},                                       \
    "Web origins (scheme://host[:port], comma-separated) whose cross-site requests are served. "   \
    "Empty: a request carrying any Origin header gets 403.")                                       \
  O(std::string, allowed_hosts, "", check::any{},                                                 \
    "Host names (comma-separated) clients may use in the Host header besides the listen address, " \
    "localhost and IP literals; other names get 403 (DNS rebinding guard).")

#define VIRTCAP_CONFIG_API(O)                                                                     \
  VIRTCAP_CONFIG_HTTP_SERVER(O, "8774", "the agent's HTTP/JSON API",                              \
                             "Bearer token every API request must carry when set. Required to bind a " \
                             "non-loopback address.",                                             \
                             "the token then crosses")                                            \
  O(int, threads, 8, check::range(1, 256), "Worker threads serving API requests.")

#define VIRTCAP_CONFIG_STORE(O)                                                                   \
  O(StoreBackend, backend, StoreBackend::sqlite, check::choice<StoreBackend>{},                   \
    "Instance store: sqlite (durable, the default) or memory (lost at exit; tests only).")       \
  O(std::string, path, "", check::abs_path{.allow_empty = true},                                  \
    "SQLite database file. Empty: <state_path>/virtcap.db.")

#define VIRTCAP_CONFIG_FLEET_SERVICE(O)                                                           \
  VIRTCAP_CONFIG_HTTP_SERVER(O, "8778", "`virtcap fleet serve`",                                  \
                             "Legacy single shared credential: a request bearing it acts as an operator (a " \
                             "warning at every start). Prefer one credential per agent: `virtcap fleet " \
                             "token create` (docs/fleet.md, Trust model).",                       \
                             "tokens and reports cross")                                          \
  O(std::string, database, "", check::any{},                                                      \
    "sqlite:///ABS/PATH (one process) or postgresql://... (libpq URI; several replicas). "         \
    "Empty: sqlite://<state_path>/fleet.sqlite.")                                                \
  O(int, host_down_after, 180, check::range(1, 31536000),                                         \
    "Seconds without a report after which a host is down (excluded from queries, with that reason).") \
  O(AnonymousRole, anonymous_role, AnonymousRole::none, check::choice<AnonymousRole>{},            \
    "Role of a request that carries no credential: none (401), reader (queries), operator (everything; " \
    "a test bench only). Only none is allowed on a non-loopback listen address.")                   \
  O(std::string, client_ca, "", check::abs_path{.allow_empty = true},                             \
    "PEM CA bundle: with TLS, a client certificate signed by it stands in for an agent token, bound to " \
    "the host its one DNS subjectAltName (or, with none, its CN) names.")                         \
  O(int, drift_check_interval, 300, check::range(0, 31536000),                                    \
    "Seconds between recounts of the database against the in-memory index (drift is logged, then " \
    "those hosts re-read); 0 disables.")                                                                 \
  O(int, max_traits_per_host, 512, check::range(1, 65536),                                        \
    "Most traits one agent report may carry; a report with more is refused whole (400), so one " \
    "host cannot grow the fleet's vocabulary without bound.")                                   \
  O(int, host_reports_per_minute, 12, check::range(0, 60000),                                     \
    "Reports (PUT /v1/hosts/{name}) one host may send a minute, in bursts of as many; more get 429 " \
    "with Retry-After and cost no database work. An agent sends one a [fleet] report_interval plus a " \
    "few retries: keep it above 60 / report_interval + 6. Counted per replica; 0: no limit.")

#define VIRTCAP_CONFIG_FLEET(O)                                                                   \
  O(std::string, url, "", check::http_url{},                                                      \
    "Fleet service this agent reports to (http(s)://HOST:PORT). Empty: standalone, no reporting.") \
  O(std::string, token, "", check::token{}, "Bearer token for the fleet service.")                \
  O(bool, allow_insecure, false, check::any{},                                                    \
    "Send [fleet] token over plain http:// to a non-loopback url (it then crosses the network in " \
    "clear text). Without it such a config is refused at load.")                                  \
  O(int, report_interval, 60, check::range(1, 86400),                                             \
    "Seconds between reports (PUT /v1/hosts/{name}); a failed report is retried sooner, with back-off.") \
  O(std::string, ca_file, "", check::abs_path{.allow_empty = true},                               \
    "PEM CA bundle the fleet service's certificate is verified against. Empty: the system CA store.") \
  O(std::string, tls_client_cert, "", check::abs_path{.allow_empty = true},                       \
    "PEM client certificate presented to the fleet service (signed by its [fleet_service] client_ca, " \
    "naming this host); stands in for [fleet] token. Set with tls_client_key.")                   \
  O(std::string, tls_client_key, "", check::abs_path{.allow_empty = true},                        \
    "Unencrypted PEM private key of tls_client_cert.")

// S(member, "toml section name", OPTIONS, "section doc")
#define VIRTCAP_CONFIG_SECTIONS(S)                                                                \
  S(defaults, "DEFAULT", VIRTCAP_CONFIG_DEFAULT, "Host identity, paths and periodic-task timing.") \
  S(compute, "compute", VIRTCAP_CONFIG_COMPUTE, "The compute manager.")                           \
  S(image_cache, "image_cache", VIRTCAP_CONFIG_IMAGE_CACHE,                                       \
    "The image-cache pass (only for drivers that declare has_imagecache).")                      \
  S(libvirt, "libvirt", VIRTCAP_CONFIG_LIBVIRT, "The libvirt driver.")                            \
  S(images, "images", VIRTCAP_CONFIG_IMAGES, "Where the libvirt driver finds images to boot.")    \
  S(api, "api", VIRTCAP_CONFIG_API, "The agent's HTTP/JSON API.")                               \
  S(store, "store", VIRTCAP_CONFIG_STORE, "The instance store.")                                 \
  S(fleet_service, "fleet_service", VIRTCAP_CONFIG_FLEET_SERVICE,                                 \
    "`virtcap fleet serve`: the fleet service agents report to (docs/fleet.md).")                  \
  S(fleet, "fleet", VIRTCAP_CONFIG_FLEET, "Reporting this agent's traits and capacity to a fleet service.")

// clang-format on
#define VIRTCAP_CONFIG_MEMBER_(T, key, def, chk, doc) T key = def;
#define VIRTCAP_CONFIG_SECTION_(member, name, LIST, doc) \
  struct member##_section {                              \
    LIST(VIRTCAP_CONFIG_MEMBER_)                         \
  } member;

struct Config {
  VIRTCAP_CONFIG_SECTIONS(VIRTCAP_CONFIG_SECTION_)

  // Where this configuration came from: a file path, or "(built-in defaults)".
  std::string source = "(built-in defaults)";

  // Effective values, with the documented fallbacks applied.
  std::string host() const;
  std::string instances_path() const;
  std::string base_dir() const;     // <instances_path>/<subdirectory_name>
  std::string images_path() const;  // [images] path, or <state_path>/images
  std::string store_path() const;   // [store] path, or <state_path>/virtcap.db
};

// The conventional config file, used when it exists and no --config is given.
inline constexpr std::string_view kDefaultConfigPath = "/etc/virtcap/virtcap.toml";

// http(s)://HOST[:PORT] with optional trailing slashes, read by one rule for
// `[fleet] url` and the client commands' --server: HOST a name, an IPv4
// address or a bracketed IPv6 address; PORT 1-65535, at most 5 digits.
struct HttpUrl {
  bool https = false;
  std::string host;        // brackets removed from an IPv6 literal
  std::string normalised;  // the scheme lower-cased, trailing slashes removed
};
enum class UrlError { not_a_url, bad_port };
Result<HttpUrl, UrlError> parse_http_url(const std::string& url);

// Parse TOML text. `source` names it in errors. Errors (code invalid_argument)
// read "FILE:LINE:COL: [section] key: what was wrong; expected ...".
Result<Config> parse(std::string_view text, std::string_view source);
// Read and parse a file; an unreadable file is an error naming it.
Result<Config> load_file(const std::string& path);
// `path` if given, else kDefaultConfigPath if it exists, else the defaults.
Result<Config> load(const std::optional<std::string>& path);

// The effective configuration as TOML (every option, with its doc as a comment).
std::string to_toml(const Config& cfg);
// docs/config.md
std::string docs_markdown();

}  // namespace virtcap::config
