#include "imagecache/backing_spec.h"

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "imagecache/qcow2.h"

namespace virtcap::imagecache {
namespace {

using Kind = BackingTarget::Kind;

// Protocols whose sources are not local files: never one of our base files.
constexpr std::array<std::string_view, 22> kRemoteProtocols = {
    "nbd",  "nbd+tcp",  "nbd+unix", "nbds",    "rbd",      "http",        "https",        "ftp",
    "ftps", "iscsi",    "iser",     "ssh",     "gluster",  "gluster+tcp", "gluster+unix", "gluster+rdma",
    "nfs",  "sheepdog", "vxhs",     "null-co", "null-aio", "nvme"};
// Protocols that open a local path.
constexpr std::array<std::string_view, 3> kLocalProtocols = {"file", "host_device", "host_cdrom"};
// Format drivers: with these, "filename" / "file.filename" names the file.
constexpr std::array<std::string_view, 13> kFormatDrivers = {"raw", "qcow2", "qcow", "qed",  "vmdk",
                                                             "vdi", "vpc",   "vhdx", "luks", "parallels",
                                                             "dmg", "cloop", "bochs"};

template <std::size_t N>
bool in(const std::array<std::string_view, N>& set, std::string_view s) {
  for (auto v : set)
    if (v == s) return true;
  return false;
}

BackingTarget unreadable(std::string why) { return {Kind::unreadable, {}, {}, std::move(why)}; }
BackingTarget remote(std::string_view proto) { return {Kind::remote, {}, {}, std::string(proto)}; }

// A local path reached through a protocol (file:, or json: options): QEMU
// opens it as given, relative to its own working directory, so only an
// absolute one is known.
BackingTarget local_absolute(std::string_view path, std::string format, std::string_view how) {
  if (path.empty()) return unreadable(std::string(how) + " names an empty file name");
  if (path.front() != '/')
    return unreadable(std::string(how) + " names the relative path \"" + std::string(path) +
                      "\", which QEMU resolves against its own working directory");
  return {Kind::local, std::string(path), std::move(format), {}};
}

// "proto:rest" with a ':' before any '/'.
BackingTarget classify_protocol(std::string_view s) {
  const auto colon = s.find(':');
  const std::string_view proto = s.substr(0, colon), rest = s.substr(colon + 1);
  if (in(kLocalProtocols, proto)) return local_absolute(rest, "", "the " + std::string(proto) + ": backing");
  if (in(kRemoteProtocols, proto)) return remote(proto);
  return unreadable("unknown protocol \"" + std::string(proto) +
                    ":\"; cannot tell whether it is a local file");
}

// Flattens nested objects into dotted keys ({"file":{"filename":x}} ->
// "file.filename"), as QEMU's qdict_flatten does. An error on arrays, and on
// a key that two spellings give ({"file":{"filename":a},"file.filename":b}):
// QEMU 7.2 opens the nested one, but which wins is an accident of its
// flattening, so such a backing is never guessed at.
std::optional<std::string> flatten(const nlohmann::json& obj, const std::string& prefix,
                                   std::map<std::string, nlohmann::json>& out) {
  for (const auto& [k, v] : obj.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.is_object()) {
      if (auto err = flatten(v, key, out)) return err;
    } else if (v.is_array()) {
      return std::string("the json: backing has array options (e.g. quorum children)");
    } else if (!out.emplace(key, v).second) {
      return "the json: backing gives \"" + key +
             "\" twice (nested and dotted); which one QEMU opens is not certain";
    } else if (v.is_string() && v.get_ref<const std::string&>().find('\0') != std::string::npos) {
      return "the json: backing's \"" + key + "\" holds a NUL character";
    }
  }
  return std::nullopt;
}

// Parses a JSON object, refusing a key repeated within one object (QEMU's
// parser refuses it; nlohmann's would keep the last).
nlohmann::json parse_unique_keys(std::string_view text, bool& duplicate) {
  std::vector<std::vector<std::string>> seen;
  duplicate = false;
  auto cb = [&](int /*depth*/, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) seen.emplace_back();
    if (ev == E::object_end && !seen.empty()) seen.pop_back();
    if (ev == E::key && !seen.empty()) {
      auto& keys = seen.back();
      const auto& k = parsed.get_ref<const std::string&>();
      if (std::find(keys.begin(), keys.end(), k) != keys.end()) duplicate = true;
      keys.push_back(k);
    }
    return true;
  };
  return nlohmann::json::parse(text, cb, /*allow_exceptions=*/false);
}

BackingTarget classify_json(std::string_view text) {
  bool duplicate = false;
  const auto doc = parse_unique_keys(text, duplicate);
  if (doc.is_discarded() || !doc.is_object()) return unreadable("the json: backing is not a JSON object");
  if (duplicate) return unreadable("the json: backing repeats a key in one object (QEMU refuses it)");
  std::map<std::string, nlohmann::json> opt;
  if (auto err = flatten(doc, "", opt)) return unreadable(std::move(*err));
  auto str = [&](const std::string& key) -> std::optional<std::string> {
    auto it = opt.find(key);
    if (it == opt.end()) return std::nullopt;
    if (!it->second.is_string()) return std::string("\x01");  // present but not a string: never a valid name
    return it->second.get<std::string>();
  };
  for (const auto& [k, v] : opt)
    if (k.rfind("backing", 0) == 0 || k.rfind("data-file", 0) == 0 || k.rfind("file.backing", 0) == 0)
      return unreadable("the json: backing sets \"" + k + "\", which changes the chain below it");
  if (opt.count("file")) return unreadable("the json: backing refers to a block node by name (\"file\")");

  const auto driver = str("driver").value_or("");
  const auto fdriver = str("file.driver"), fname = str("file.filename");
  if ((fdriver || fname) && opt.count("filename"))
    return unreadable(
        "the json: backing gives both \"filename\" and \"file.*\"; which file QEMU opens is not certain");
  if (fdriver || fname) {
    // A format layer ("driver") over a protocol child ("file.*").
    if (!driver.empty() && !in(kFormatDrivers, driver))
      return unreadable("the json: backing's driver \"" + driver + "\" is not a format driver over a file");
    const std::string proto = fdriver.value_or("");
    if (proto.empty()) {
      if (!fname) return unreadable("the json: backing has no file.filename");
      if (backing_has_protocol(*fname)) {
        BackingTarget t = classify_protocol(*fname);
        if (t.kind == Kind::local) t.format = driver;
        return t;
      }
      return local_absolute(*fname, driver, "the json: backing's file.filename");
    }
    if (in(kRemoteProtocols, proto)) return remote(proto);
    if (!in(kLocalProtocols, proto))
      return unreadable("the json: backing's file.driver \"" + proto + "\" is not a known protocol");
    return local_absolute(fname.value_or(""), driver, "the json: backing's file.filename");
  }
  const auto name = str("filename");
  if (in(kRemoteProtocols, driver)) return remote(driver);
  if (!name) return unreadable("the json: backing has neither filename nor file.filename");
  if (driver.empty() || in(kFormatDrivers, driver)) {
    if (backing_has_protocol(*name)) {
      BackingTarget t = classify_protocol(*name);
      if (t.kind == Kind::local) t.format = driver;
      return t;
    }
    return local_absolute(*name, driver, "the json: backing's filename");
  }
  if (in(kLocalProtocols, driver)) return local_absolute(*name, "", "the json: backing's filename");
  return unreadable("the json: backing's driver \"" + driver + "\" is not one this reader follows");
}

}  // namespace

BackingTarget classify_backing(std::string_view backing, std::string_view image_dir) {
  if (backing.empty()) return unreadable("the backing file name is empty");
  if (backing.rfind("json:", 0) == 0) return classify_json(backing.substr(5));
  if (backing_has_protocol(backing)) return classify_protocol(backing);
  if (backing.front() == '/') return {Kind::local, std::string(backing), {}, {}};
  // Relative: joined onto the directory of the image, as spelled (QEMU's
  // path_combine), and left for the kernel to resolve.
  std::string path(image_dir.empty() ? "." : image_dir);
  if (path.back() != '/') path += '/';
  path += backing;
  return {Kind::local, std::move(path), {}, {}};
}

}  // namespace virtcap::imagecache
