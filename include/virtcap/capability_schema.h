// Machinery that turns one X-macro list of capabilities into:
//   * an aggregate struct (one member per capability, initialised to its default),
//   * a constexpr descriptor table (name, type, trait, doc),
//   * a visitor that walks (descriptor, value, default) triples,
//   * compile-time checks: non-empty docs, unique names, unique well-formed traits.
//
// The list entries have the shape X(type, name, default, trait, doc). The
// trait is "" (none), an os-traits name such as "COMPUTE_NET_ATTACH_INTERFACE"
// (reported when a bool capability is true), or a family "PREFIX_*" (reported
// once per member of a set-valued capability, e.g. COMPUTE_IMAGE_TYPE_QCOW2).
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

namespace virtcap::schema {

struct Descriptor {
  std::string_view name;
  std::string_view type;
  std::string_view trait;
  std::string_view doc;
};

// The printable type name of a capability's C++ type; specialised next to
// each type a capability may have. A type without one does not compile.
template <class T>
struct TypeName;

template <>
struct TypeName<bool> {
  static constexpr std::string_view value = "bool";
};
template <>
struct TypeName<int> {
  static constexpr std::string_view value = "int";
};

constexpr bool is_trait_family(std::string_view trait) {
  return trait.size() >= 2 && trait.substr(trait.size() - 2) == "_*";
}

// os-traits style: ^[A-Z][A-Z0-9_]*$, optionally followed by "*" for a family.
constexpr bool trait_well_formed(std::string_view trait) {
  if (trait.empty()) return true;
  std::string_view body = is_trait_family(trait) ? trait.substr(0, trait.size() - 1) : trait;
  if (body.empty() || body[0] < 'A' || body[0] > 'Z') return false;
  for (char c : body) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

constexpr bool all_docs_present(std::span<const Descriptor> ds) {
  for (const auto& d : ds)
    if (d.doc.empty()) return false;
  return true;
}

constexpr bool names_unique(std::span<const Descriptor> ds) {
  for (std::size_t i = 0; i < ds.size(); ++i)
    for (std::size_t j = i + 1; j < ds.size(); ++j)
      if (ds[i].name == ds[j].name) return false;
  return true;
}

constexpr bool traits_unique(std::span<const Descriptor> ds) {
  for (std::size_t i = 0; i < ds.size(); ++i)
    for (std::size_t j = i + 1; j < ds.size(); ++j)
      if (!ds[i].trait.empty() && ds[i].trait == ds[j].trait) return false;
  return true;
}

constexpr bool traits_well_formed(std::span<const Descriptor> ds) {
  for (const auto& d : ds)
    if (!trait_well_formed(d.trait)) return false;
  return true;
}

// A plain trait only makes sense on a bool (reported when true); a family
// only on a set type (reported per member). Enforced so that a trait can never
// be silently ignored by the renderer.
constexpr bool traits_fit_types(std::span<const Descriptor> ds) {
  for (const auto& d : ds) {
    if (d.trait.empty()) continue;
    const bool is_set = d.type.starts_with("set<");
    if (is_trait_family(d.trait) != is_set) return false;
    if (!is_set && d.type != "bool") return false;
  }
  return true;
}

}  // namespace virtcap::schema

#define VIRTCAP_SCHEMA_MEMBER_(T, name, def, trait, doc) T name = def;
#define VIRTCAP_SCHEMA_DESC_(T, name, def, trait, doc) \
  ::virtcap::schema::Descriptor{#name, ::virtcap::schema::TypeName<T>::value, trait, doc},
#define VIRTCAP_SCHEMA_VISIT_(T, name, def, trait, doc) f(kDescriptors[i++], caps.name, defaults.name);

// Defines `Struct` (an aggregate with one member per entry), `Struct##Schema`
// (its descriptor table and visitor) and the compile-time checks. The table
// and its checks come first, so a broken list is reported by the check that
// names the problem (e.g. "two capabilities share one name") before any
// error the struct's members would raise (e.g. a redeclaration).
#define VIRTCAP_DEFINE_CAPABILITIES(Struct, LIST)                                              \
  struct Struct##Descriptors_ {                                                                \
    static constexpr std::array kDescriptors = {LIST(VIRTCAP_SCHEMA_DESC_)};                   \
  };                                                                                           \
  static_assert(::virtcap::schema::all_docs_present(Struct##Descriptors_::kDescriptors),       \
                "every capability needs a non-empty one-line doc");                            \
  static_assert(::virtcap::schema::names_unique(Struct##Descriptors_::kDescriptors),           \
                "two capabilities share one name");                                            \
  static_assert(::virtcap::schema::traits_unique(Struct##Descriptors_::kDescriptors),          \
                "two capabilities share one trait");                                           \
  static_assert(::virtcap::schema::traits_well_formed(Struct##Descriptors_::kDescriptors),     \
                "a trait must match ^[A-Z][A-Z0-9_]*$ (or PREFIX_* for a set-valued family)"); \
  static_assert(::virtcap::schema::traits_fit_types(Struct##Descriptors_::kDescriptors),       \
                "a plain trait needs a bool capability; a PREFIX_* family needs a set type");  \
  struct Struct {                                                                              \
    LIST(VIRTCAP_SCHEMA_MEMBER_)                                                               \
    constexpr bool operator==(const Struct&) const = default;                                  \
  };                                                                                           \
  struct Struct##Schema : Struct##Descriptors_ {                                               \
    static constexpr std::size_t size() { return kDescriptors.size(); }                        \
    /* f(const Descriptor&, const T& value, const T& default_value) for every capability */    \
    template <class F>                                                                         \
    static constexpr void visit(const Struct& caps, F&& f) {                                   \
      const Struct defaults{};                                                                 \
      std::size_t i = 0;                                                                       \
      LIST(VIRTCAP_SCHEMA_VISIT_)                                                              \
    }                                                                                          \
  }
