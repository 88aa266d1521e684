// Runtime views of a Capabilities value, all generated from the schema:
// enumeration, traits, and the table / JSON / markdown renderings.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "virtcap/capabilities.h"

namespace virtcap::caps {

struct Entry {
  std::string_view name;
  std::string_view type;
  std::string_view trait;
  std::string_view doc;
  nlohmann::json value;
  nlohmann::json default_value;
  bool overridden = false;  // value != default
};

std::vector<Entry> enumerate(const Capabilities& caps);

// The traits this value reports, sorted: each true bool with a trait, and
// PREFIX_<MEMBER> for every member of a set with a trait family.
std::vector<std::string> traits(const Capabilities& caps);

// Every trait the schema can ever report, sorted.
std::vector<std::string> all_traits();

// {"driver", "capabilities": [{name,type,value,default,overridden,trait,doc}], "traits"}
nlohmann::json to_json(std::string_view driver, const Capabilities& caps);
std::string to_table(std::string_view driver, const Capabilities& caps);
std::string to_markdown(std::string_view driver, const Capabilities& caps);

// docs/capabilities.md: the schema plus each built-in driver's declaration.
struct DriverColumn {
  std::string name;
  Capabilities caps;
  std::string note;
};
std::string schema_markdown(const std::vector<DriverColumn>& drivers);

// Human-readable value ("true", "[raw, qcow2]", "qemu", "64").
std::string value_text(const nlohmann::json& v);

}  // namespace virtcap::caps
