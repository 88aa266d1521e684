// Domain and device XML for the libvirt driver, built and read with pugixml.
#pragma once

#include <string>
#include <vector>

#include "virtcap/driver.h"

namespace virtcap::libvirt {

// Our metadata namespace inside <metadata>: marks the domains virtcap owns.
inline constexpr const char* kMetadataUri = "urn:virtcap:instance:1";
inline constexpr const char* kDomainNamePrefix = "virtcap-";

struct DomainParams {
  std::string uuid;
  std::string name;         // the instance name (kept in metadata and <title>)
  std::string image_id;     // kept in metadata
  std::string domain_type;  // "test", "qemu" or "kvm"
  int memory_mb = 0;
  int vcpus = 0;
  std::string disk_path;
  std::string console_log;
  std::string network;  // empty: user-mode networking
  std::string mac;      // of the first interface
};

std::string domain_xml(const DomainParams& p);
std::string interface_xml(const std::string& mac, const std::string& network);

struct DomainFacts {
  std::string name;  // instance name from our metadata ("" if not ours)
  bool ours = false;
  int memory_mb = 0;
  int vcpus = 0;
  std::vector<InterfaceInfo> interfaces;
};

// Reads what virtcap needs back from a domain's XML. invalid_argument if the
// XML does not parse.
Result<DomainFacts> parse_domain_xml(const std::string& xml);

// A locally administered unicast MAC in the 52:54:00 range QEMU uses.
std::string random_mac();

}  // namespace virtcap::libvirt
