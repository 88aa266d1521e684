#include "capabilities/render.h"

#include <algorithm>
#include <sstream>

#include "common/json_text.h"
#include "common/strings.h"

namespace virtcap::caps {
namespace {

nlohmann::json as_json(bool v) { return v; }
nlohmann::json as_json(int v) { return v; }
nlohmann::json as_json(VirtType v) { return std::string(to_string(v)); }
nlohmann::json as_json(const ImageFormats& v) {
  nlohmann::json out = nlohmann::json::array();
  for (auto f : kAllImageFormats)
    if (v.contains(f)) out.push_back(std::string(to_string(f)));
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

// A trait family "PREFIX_*" expands to PREFIX_<MEMBER> for each member.
void append_traits(std::string_view trait, bool v, std::vector<std::string>& out) {
  if (v && !trait.empty()) out.emplace_back(trait);
}
void append_traits(std::string_view trait, const ImageFormats& v, std::vector<std::string>& out) {
  if (trait.empty()) return;
  const auto prefix = trait.substr(0, trait.size() - 1);
  for (auto f : kAllImageFormats)
    if (v.contains(f)) out.push_back(std::string(prefix) + upper(to_string(f)));
}
void append_traits(std::string_view, int, std::vector<std::string>&) {}
void append_traits(std::string_view, VirtType, std::vector<std::string>&) {}

std::string escape_md(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::vector<Entry> enumerate(const Capabilities& caps) {
  std::vector<Entry> out;
  out.reserve(CapabilitiesSchema::size());
  CapabilitiesSchema::visit(caps, [&](const schema::Descriptor& d, const auto& value, const auto& def) {
    out.push_back(Entry{d.name, d.type, d.trait, d.doc, as_json(value), as_json(def), !(value == def)});
  });
  return out;
}

std::vector<std::string> traits(const Capabilities& caps) {
  std::vector<std::string> out;
  CapabilitiesSchema::visit(caps, [&](const schema::Descriptor& d, const auto& value, const auto&) {
    append_traits(d.trait, value, out);
  });
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> all_traits() {
  // Turn every bool on and fill every set, then ask for the traits.
  Capabilities everything;
#define VIRTCAP_ALL_ON_(T, name, def, trait, doc) set_all(everything.name);
  auto set_all = [](auto& v) {
    using V = std::decay_t<decltype(v)>;
    if constexpr (std::is_same_v<V, bool>) {
      v = true;
    } else if constexpr (std::is_same_v<V, ImageFormats>) {
      for (auto f : kAllImageFormats) v.insert(f);
    }
  };
  VIRTCAP_CAPABILITIES(VIRTCAP_ALL_ON_)
#undef VIRTCAP_ALL_ON_
  return traits(everything);
}

std::string value_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    return "[" + join(v, ", ", value_text) + "]";
  }
  return dump_json(v);
}

nlohmann::json to_json(std::string_view driver, const Capabilities& caps) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& e : enumerate(caps)) {
    list.push_back({{"name", e.name},
                    {"type", e.type},
                    {"value", e.value},
                    {"default", e.default_value},
                    {"overridden", e.overridden},
                    {"trait", e.trait.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.trait)},
                    {"doc", e.doc}});
  }
  return {{"driver", driver}, {"capabilities", list}, {"traits", traits(caps)}};
}

std::string to_table(std::string_view driver, const Capabilities& caps) {
  const auto entries = enumerate(caps);
  std::size_t wname = 4, wvalue = 5;
  for (const auto& e : entries) {
    wname = std::max(wname, e.name.size());
    wvalue = std::max(wvalue, value_text(e.value).size());
  }
  std::ostringstream os;
  os << "driver: " << driver << "\n\n";
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(w, s.size()), ' ');
    return s;
  };
  os << pad("NAME", wname) << "  " << pad("VALUE", wvalue) << "  SET  DOC\n";
  for (const auto& e : entries) {
    os << pad(std::string(e.name), wname) << "  " << pad(value_text(e.value), wvalue) << "  "
       << (e.overridden ? "*  " : "   ") << "  " << e.doc << "\n";
  }
  os << "\n(* = declared or discovered by the driver; otherwise the default)\n";
  const auto ts = traits(caps);
  os << "traits:";
  if (ts.empty()) os << " (none)";
  for (const auto& t : ts) os << "\n  " << t;
  os << "\n";
  return os.str();
}

std::string to_markdown(std::string_view driver, const Capabilities& caps) {
  std::ostringstream os;
  os << "## Capabilities of driver `" << driver << "`\n\n";
  os << "| name | type | value | default | overridden | trait | doc |\n";
  os << "|---|---|---|---|---|---|---|\n";
  for (const auto& e : enumerate(caps)) {
    os << "| `" << e.name << "` | " << escape_md(e.type) << " | " << escape_md(value_text(e.value)) << " | "
       << escape_md(value_text(e.default_value)) << " | " << (e.overridden ? "yes" : "no") << " | "
       << (e.trait.empty() ? "" : "`" + std::string(e.trait) + "`") << " | " << escape_md(e.doc) << " |\n";
  }
  os << "\nTraits: ";
  const auto ts = traits(caps);
  if (ts.empty()) os << "(none)";
  os << join(ts, ", ", [](const auto& t) { return "`" + std::string(t) + "`"; });
  os << "\n";
  return os.str();
}

std::string schema_markdown(const std::vector<DriverColumn>& drivers) {
  std::ostringstream os;
  os << "<!-- Generated by `virtcap docs capabilities`; do not edit. "
        "A test fails when this file is stale. -->\n";
  os << "# Driver capabilities\n\n";
  os << "Each capability is declared once, in `include/virtcap/capabilities.h` "
        "(`VIRTCAP_CAPABILITIES`). This page is generated from that declaration.\n\n";
  os << "## Schema\n\n";
  os << "| name | type | default | trait | doc |\n|---|---|---|---|---|\n";
  for (const auto& e : enumerate(kDefaultCapabilities)) {
    os << "| `" << e.name << "` | " << escape_md(e.type) << " | " << escape_md(value_text(e.default_value))
       << " | " << (e.trait.empty() ? "" : "`" + std::string(e.trait) + "`") << " | " << escape_md(e.doc)
       << " |\n";
  }
  os << "\nA trait ending in `_*` is a family: a set-valued capability reports "
        "`PREFIX_<MEMBER>` for each member (e.g. `COMPUTE_IMAGE_TYPE_QCOW2`). "
        "A plain trait is reported when its bool capability is true.\n\n";
  os << "Every trait virtcap can report:\n\n";
  for (const auto& t : all_traits()) os << "- `" << t << "`\n";
  os << "\n## Built-in drivers\n\n";
  os << "What each driver declares at compile time (values that differ from the default). "
        "Capabilities a driver discovers from its hypervisor at `init_host` are described "
        "in the driver's note.\n\n";
  for (const auto& d : drivers) {
    os << "### `" << d.name << "`\n\n";
    if (!d.note.empty()) os << d.note << "\n\n";
    bool any = false;
    for (const auto& e : enumerate(d.caps)) {
      if (!e.overridden) continue;
      any = true;
      os << "- `" << e.name << "` = " << value_text(e.value) << "\n";
    }
    if (!any) os << "- (declares nothing: every capability has its default)\n";
    os << "\n";
  }
  return os.str();
}

}  // namespace virtcap::caps
