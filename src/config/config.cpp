#include "config/config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/group.h"
#include "common/net_address.h"
#include "common/strings.h"

namespace virtcap::config {

Result<HttpUrl, UrlError> parse_http_url(const std::string& raw) {
  std::string_view u(raw);
  while (u.size() > 1 && u.back() == '/') u.remove_suffix(1);
  const auto sep = u.find("://");
  if (sep == std::string_view::npos) return UrlError::not_a_url;
  std::string scheme(u.substr(0, sep));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string_view rest = u.substr(sep + 3);
  if ((scheme != "http" && scheme != "https") || rest.empty()) return UrlError::not_a_url;
  for (const char c : rest)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f ||
        std::string_view("/?#@").find(c) != std::string_view::npos)
      return UrlError::not_a_url;
  // HOST is a name, an IPv4 address or a bracketed IPv6 address; one colon
  // at most outside brackets, before the port.
  std::string_view host;
  std::optional<std::string_view> port;  // what follows the colon, when there is one
  if (rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close == 1) return UrlError::not_a_url;
    host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty() && after.front() != ':') return UrlError::not_a_url;
    if (!after.empty()) port = after.substr(1);
  } else {
    const auto colon = rest.find(':');
    if (colon == 0 || rest.find_first_of("[]") != std::string_view::npos ||
        (colon != std::string_view::npos && rest.find(':', colon + 1) != std::string_view::npos))
      return UrlError::not_a_url;
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
  }
  int number = 0;
  if (port && (port->empty() || port->size() > 5 ||
               std::from_chars(port->data(), port->data() + port->size(), number).ptr !=
                   port->data() + port->size() ||
               number < 1 || number > 65535))
    return UrlError::bad_port;
  return HttpUrl{scheme == "https", std::string(host), scheme + std::string(u.substr(sep))};
}

namespace check {
std::string range::describe() const {
  return "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
}
std::optional<std::string> range::operator()(std::int64_t v) const {
  if (v < lo || v > hi) return "expected " + describe() + ", got " + std::to_string(v);
  return std::nullopt;
}
std::string positive_number::describe() const {
  return "a number greater than 0, at most " + std::to_string(static_cast<std::int64_t>(hi));
}
std::optional<std::string> positive_number::operator()(double v) const {
  if (!std::isfinite(v) || v <= 0 || v > hi) return "expected " + describe() + ", got " + std::to_string(v);
  return std::nullopt;
}
std::string abs_path::describe() const {
  return allow_empty ? "an absolute path, or empty" : "an absolute path";
}
std::optional<std::string> abs_path::operator()(const std::string& v) const {
  if (v.empty() && allow_empty) return std::nullopt;
  if (v.empty() || v[0] != '/') return "expected " + describe() + ", got \"" + v + "\"";
  return std::nullopt;
}
std::string dir_name::describe() const { return "a single directory name (no '/', not '.' or '..')"; }
std::optional<std::string> dir_name::operator()(const std::string& v) const {
  if (v.empty() || v == "." || v == ".." || v.find('/') != std::string::npos ||
      v.find('\0') != std::string::npos)
    return "expected " + describe() + ", got \"" + v + "\"";
  return std::nullopt;
}
std::string token::describe() const { return "empty, or printable ASCII with no spaces"; }
std::optional<std::string> token::operator()(const std::string& v) const {
  for (const char c : v)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      return "a token is printable ASCII with no spaces or control characters (a blank one is no token: "
             "leave "
             "the option empty for none)";
  return std::nullopt;
}
std::string http_url::describe() const { return "empty, or http://HOST[:PORT] or https://HOST[:PORT]"; }
std::optional<std::string> http_url::operator()(const std::string& v) const {
  if (v.empty() || parse_http_url(v).ok()) return std::nullopt;
  return "expected " + describe() + ", got \"" + v + "\"";
}
std::string group_name::describe() const { return "empty, or a group name this host knows"; }
std::optional<std::string> group_name::operator()(const std::string& v) const {
  if (v.empty()) return std::nullopt;
  if (v.find('\0') == std::string::npos && group_id(v)) return std::nullopt;
  return "no group named \"" + v +
         "\" on this host (getent group lists them); create it or leave the option empty";
}
std::string listen_address::describe() const { return "HOST:PORT, port 0-65535"; }
std::optional<std::string> listen_address::operator()(const std::string& v) const {
  if (!split_listen(v)) return "expected " + describe() + " (e.g. 127.0.0.1:8774), got \"" + v + "\"";
  return std::nullopt;
}
std::string non_empty::describe() const { return "a non-empty string"; }
std::string origin_list::describe() const { return "comma-separated scheme://host[:port] origins"; }
std::optional<std::string> origin_list::operator()(const std::string& v) const {
  std::string item;
  for (char c : v + ",") {
    if (c != ',' && c != ' ' && c != '\t') {
      item += c;
      continue;
    }
    if (item.empty()) continue;
    const auto scheme = item.find("://");
    if (scheme == std::string::npos || scheme == 0 || scheme + 3 >= item.size() ||
        item.find('/', scheme + 3) != std::string::npos)
      return "expected " + describe() + " (e.g. https://dashboard.example:8443), got \"" + item + "\"";
    item.clear();
  }
  return std::nullopt;
}

std::optional<std::string> non_empty::operator()(const std::string& v) const {
  if (v.empty()) return "expected " + describe();
  return std::nullopt;
}
}  // namespace check

namespace {

template <class T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "boolean";
  else if constexpr (std::is_same_v<T, int>)
    return "integer";
  else if constexpr (std::is_same_v<T, double>)
    return "float";
  else
    return "string";
}

std::string toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date/time";
  }
}

std::string where(std::string_view source, const toml::source_region& r) {
  std::ostringstream os;
  os << source << ":" << r.begin.line << ":" << r.begin.column;
  return os.str();
}

// "/a/b/../c/" -> "/a/c"; then symlinks resolved for the part that exists.
std::string normalise_path(const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path lexical = std::filesystem::path(p).lexically_normal();
  std::error_code ec;
  std::filesystem::path real = std::filesystem::weakly_canonical(lexical, ec);
  std::string out = (ec ? lexical : real).string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// Reads one option from its TOML node into `field`, applying its check.
template <class T, class Check>
std::optional<std::string> read_value(const toml::node& node, T& field, const Check& chk) {
  if constexpr (std::is_same_v<T, bool>) {
    auto v = node.value_exact<bool>();
    if (!v) return "expected a boolean (true or false), got " + toml_type_name(node);
    field = *v;
  } else if constexpr (std::is_same_v<T, int>) {
    auto v = node.value_exact<std::int64_t>();
    if (!v) return "expected an integer, got " + toml_type_name(node);
    if (auto err = chk(*v)) return err;
    field = static_cast<int>(*v);
    return std::nullopt;
  } else if constexpr (std::is_same_v<T, double>) {
    auto v = node.value_exact<double>();
    if (auto i = node.value_exact<std::int64_t>(); !v && i) v = static_cast<double>(*i);
    if (!v) return "expected a number, got " + toml_type_name(node);
    if (auto err = chk(*v)) return err;
    field = *v;
    return std::nullopt;
  } else if constexpr (ChoiceEnum<T>) {
    auto v = node.value_exact<std::string>();
    if (!v) return "expected a string, got " + toml_type_name(node);
    const auto parsed = parse_choice<T>(*v);
    if (!parsed) return "expected " + chk.describe() + ", got \"" + *v + "\"";
    field = *parsed;
    return std::nullopt;
  } else {
    auto v = node.value_exact<std::string>();
    if (!v) return "expected a string, got " + toml_type_name(node);
    field = *v;
  }
  if (auto err = chk(field)) return err;
  if constexpr (std::is_same_v<Check, check::abs_path>) field = normalise_path(field);
  return std::nullopt;
}

// Shortest text that reads back as the same double, always with a '.' or
// an exponent so TOML reads it as a float.
std::string number_text(double v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string out(buf, res.ptr);
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";
  return out;
}

template <class T>
std::string default_text(const T& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, int>)
    return std::to_string(v);
  else if constexpr (std::is_same_v<T, double>)
    return number_text(v);
  else if constexpr (ChoiceEnum<T>)
    return "\"" + std::string(to_string(v)) + "\"";
  else
    return "\"" + std::string(v) + "\"";
}

std::string toml_string(const std::string& s) {
  std::ostringstream os;
  os << toml::value<std::string>(s);
  return os.str();
}

template <class T>
std::string toml_value_text(const T& v) {
  if constexpr (std::is_same_v<T, std::string>)
    return toml_string(v);
  else if constexpr (ChoiceEnum<T>)
    return toml_string(std::string(to_string(v)));
  else
    return default_text(v);
}

// Visits every section: f(section_name, section_doc, visit_options), where
// visit_options(g) calls g(key, doc, field, default_value, check) per option.
template <class F>
void for_each_section(Config& cfg, F&& f) {
#define VIRTCAP_CONFIG_VISIT_OPT_(T, key, def, chk, doc) g(#key, doc, sec.key, T(def), chk);
#define VIRTCAP_CONFIG_VISIT_SEC_(member, name, LIST, doc)           \
  {                                                                  \
    auto& sec = cfg.member;                                          \
    f(name, doc, [&](auto&& g) { LIST(VIRTCAP_CONFIG_VISIT_OPT_) }); \
  }
  VIRTCAP_CONFIG_SECTIONS(VIRTCAP_CONFIG_VISIT_SEC_)
#undef VIRTCAP_CONFIG_VISIT_SEC_
#undef VIRTCAP_CONFIG_VISIT_OPT_
}

std::vector<std::string> section_names() {
  std::vector<std::string> out;
  Config cfg;
  for_each_section(cfg, [&](std::string_view name, std::string_view, auto&&) { out.emplace_back(name); });
  return out;
}

}  // namespace

std::string Config::host() const {
  if (!defaults.host.empty()) return defaults.host;
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string Config::instances_path() const {
  if (!defaults.instances_path.empty()) return defaults.instances_path;
  return defaults.state_path + "/instances";
}

std::string Config::images_path() const {
  if (!images.path.empty()) return images.path;
  return defaults.state_path + "/images";
}

std::string Config::store_path() const {
  if (!store.path.empty()) return store.path;
  return defaults.state_path + "/virtcap.db";
}

std::string Config::base_dir() const { return instances_path() + "/" + image_cache.subdirectory_name; }

namespace {
// Rules between options, after each option's own check.
std::optional<std::string> check_across(const Config& cfg) {
  const auto& f = cfg.fleet;
  const auto url = parse_http_url(f.url);  // an empty url is not one: nothing is sent
  if (url.ok() && !url->https && !f.token.empty() && !is_loopback(url->host) && !f.allow_insecure)
    return "[fleet] url = \"" + f.url +
           "\" would send [fleet] token in clear text to a host that is not "
           "loopback; use https:// (with [fleet] ca_file), or set [fleet] allow_insecure = true";
  if (f.tls_client_cert.empty() != f.tls_client_key.empty())
    return std::string("[fleet] tls_client_cert and tls_client_key must be set together (only ") +
           (f.tls_client_cert.empty() ? "tls_client_key" : "tls_client_cert") + " is set)";
  if (!f.tls_client_cert.empty() && url.ok() && !url->https)
    return "[fleet] tls_client_cert is set but [fleet] url = \"" + f.url +
           "\" is not https://: a client "
           "certificate is presented only over TLS";
  return std::nullopt;
}
}  // namespace

Result<Config> parse(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return invalid_argument_error(where(source, e.source()) +
                                  ": invalid TOML: " + std::string(e.description()));
  }

  Config cfg;
  cfg.source = std::string(source);
  std::optional<Error> failure;
  for (auto&& sec_entry : root) {
    if (failure) break;
    const toml::key& sec_key = sec_entry.first;
    const toml::node& sec_node = sec_entry.second;
    const std::string sec_name(sec_key.str());
    bool known = false;
    for_each_section(cfg, [&](std::string_view name, std::string_view, auto&& visit_options) {
      if (name != sec_name || failure) return;
      known = true;
      const auto* table = sec_node.as_table();
      if (!table) {
        failure = invalid_argument_error(where(source, sec_node.source()) + ": '" + sec_name +
                                         "' must be a section ([" + sec_name + "]), got " +
                                         toml_type_name(sec_node));
        return;
      }
      for (auto&& entry : *table) {
        if (failure) return;
        const toml::key& key = entry.first;
        const toml::node& node = entry.second;
        const std::string key_name(key.str());
        bool found = false;
        std::vector<std::string> known_keys;
        visit_options([&](std::string_view k, std::string_view, auto& field, const auto&, const auto& chk) {
          known_keys.emplace_back(k);
          if (k != key_name) return;
          found = true;
          if (auto err = read_value(node, field, chk))
            failure = invalid_argument_error(where(source, node.source()) + ": [" + sec_name + "] " +
                                             key_name + ": " + *err);
        });
        if (!found && !failure)
          failure = invalid_argument_error(where(source, key.source()) + ": [" + sec_name + "] " + key_name +
                                           ": unknown option; known options in [" + sec_name +
                                           "]: " + join(known_keys));
      }
    });
    if (!known && !failure) {
      if (sec_node.is_table())
        failure = invalid_argument_error(where(source, sec_key.source()) + ": [" + sec_name +
                                         "]: unknown section; known sections: " + join(section_names()));
      else
        failure = invalid_argument_error(where(source, sec_key.source()) + ": " + sec_name +
                                         ": option outside any section; put it under its section, e.g. "
                                         "[DEFAULT]");
    }
  }
  if (failure) return *failure;
  if (auto err = check_across(cfg)) return invalid_argument_error(std::string(source) + ": " + *err);
  return cfg;
}

Result<Config> load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return invalid_argument_error("cannot read config file " + path + ": " + std::strerror(err) +
                                  "; check the path given with --config");
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return invalid_argument_error("cannot read config file " + path + ": read error");
  return parse(buf.str(), path);
}

Result<Config> load(const std::optional<std::string>& path) {
  if (path) return load_file(*path);
  if (::access(std::string(kDefaultConfigPath).c_str(), F_OK) == 0)
    return load_file(std::string(kDefaultConfigPath));
  return Config{};
}

std::string to_toml(const Config& cfg_in) {
  Config cfg = cfg_in;
  std::ostringstream os;
  os << "# virtcap effective configuration (source: " << cfg.source << ")\n";
  for_each_section(cfg, [&](std::string_view name, std::string_view doc, auto&& visit_options) {
    os << "\n# " << doc << "\n[" << name << "]\n";
    visit_options([&](std::string_view key, std::string_view kdoc, auto& field, const auto&, const auto&) {
      os << "# " << kdoc << "\n" << key << " = " << toml_value_text(field) << "\n";
    });
  });
  return os.str();
}

std::string docs_markdown() {
  Config cfg;
  std::ostringstream os;
  os << "<!-- Generated by `virtcap docs config`; do not edit. "
        "A test fails when this file is stale. -->\n";
  os << "# Configuration\n\n";
  os << "virtcap reads one TOML file: the one given with `--config FILE`, else `" << kDefaultConfigPath
     << "` if it exists, else the built-in defaults below. "
        "`virtcap config show` prints the effective configuration.\n\n"
        "Errors name the file, line, column, section and option, and what was expected. "
        "Unknown sections and options are errors (a typo never silently falls back to a "
        "default). A bad config makes every command exit with status 2.\n";
  for_each_section(cfg, [&](std::string_view name, std::string_view doc, auto&& visit_options) {
    os << "\n## `[" << name << "]`\n\n" << doc << "\n\n";
    os << "| option | type | default | allowed | doc |\n|---|---|---|---|---|\n";
    visit_options(
        [&](std::string_view key, std::string_view kdoc, auto& field, const auto& def, const auto& chk) {
          using T = std::decay_t<decltype(field)>;
          os << "| `" << key << "` | " << type_name<T>() << " | `" << default_text(def) << "` | "
             << chk.describe() << " | " << kdoc << " |\n";
        });
  });
  return os.str();
}

}  // namespace virtcap::config
