#include "virt/libvirt/domain_xml.h"

#include <cstdio>
#include <pugixml.hpp>
#include <random>
#include <sstream>

namespace virtcap::libvirt {

namespace {

void add_interface(pugi::xml_node devices, const std::string& mac, const std::string& network) {
  auto iface = devices.append_child("interface");
  if (network.empty()) {
    iface.append_attribute("type") = "user";
  } else {
    iface.append_attribute("type") = "network";
    iface.append_child("source").append_attribute("network") = network.c_str();
  }
  if (!mac.empty()) iface.append_child("mac").append_attribute("address") = mac.c_str();
  iface.append_child("model").append_attribute("type") = "virtio";
}

std::string to_string(const pugi::xml_document& doc) {
  std::ostringstream os;
  doc.save(os, "  ", pugi::format_default | pugi::format_no_declaration);
  return os.str();
}

}  // namespace

std::string domain_xml(const DomainParams& p) {
  pugi::xml_document doc;
  auto dom = doc.append_child("domain");
  dom.append_attribute("type") = p.domain_type.c_str();
  dom.append_child("name").text() = (kDomainNamePrefix + p.uuid).c_str();
  dom.append_child("uuid").text() = p.uuid.c_str();
  dom.append_child("title").text() = p.name.c_str();
  auto meta = dom.append_child("metadata").append_child("virtcap:instance");
  meta.append_attribute("xmlns:virtcap") = kMetadataUri;
  meta.append_child("virtcap:name").text() = p.name.c_str();
  meta.append_child("virtcap:image").text() = p.image_id.c_str();
  auto mem = dom.append_child("memory");
  mem.append_attribute("unit") = "MiB";
  mem.text() = p.memory_mb;
  dom.append_child("vcpu").text() = p.vcpus;
  auto os = dom.append_child("os");
  auto type = os.append_child("type");
  if (p.domain_type != "test") type.append_attribute("arch") = "x86_64";
  type.text() = "hvm";
  os.append_child("boot").append_attribute("dev") = "hd";
  dom.append_child("features").append_child("acpi");
  dom.append_child("on_poweroff").text() = "destroy";
  dom.append_child("on_reboot").text() = "restart";
  dom.append_child("on_crash").text() = "destroy";

  auto devices = dom.append_child("devices");
  auto disk = devices.append_child("disk");
  disk.append_attribute("type") = "file";
  disk.append_attribute("device") = "disk";
  auto drv = disk.append_child("driver");
  drv.append_attribute("name") = "qemu";
  drv.append_attribute("type") = "qcow2";
  disk.append_child("source").append_attribute("file") = p.disk_path.c_str();
  auto target = disk.append_child("target");
  target.append_attribute("dev") = "vda";
  target.append_attribute("bus") = "virtio";
  add_interface(devices, p.mac, p.network);
  auto serial = devices.append_child("serial");
  serial.append_attribute("type") = "file";
  serial.append_child("source").append_attribute("path") = p.console_log.c_str();
  serial.append_child("target").append_attribute("port") = "0";
  devices.append_child("memballoon").append_attribute("model") = "none";
  return to_string(doc);
}

std::string interface_xml(const std::string& mac, const std::string& network) {
  pugi::xml_document doc;
  add_interface(doc.root(), mac, network);
  return to_string(doc);
}

Result<DomainFacts> parse_domain_xml(const std::string& xml) {
  pugi::xml_document doc;
  auto res = doc.load_string(xml.c_str());
  if (!res)
    return make_error(Errc::invalid_argument, std::string("domain XML does not parse: ") + res.description());
  DomainFacts f;
  auto dom = doc.child("domain");
  for (auto node : dom.child("metadata").children()) {
    // Our element, whatever prefix libvirt chose when it stored it.
    for (auto attr : node.attributes()) {
      if (std::string(attr.value()) != kMetadataUri) continue;
      std::string prefix = node.name();
      const auto colon = prefix.find(':');
      prefix = colon == std::string::npos ? "" : prefix.substr(0, colon + 1);
      f.ours = true;
      f.name = node.child((prefix + "name").c_str()).text().as_string();
    }
  }
  auto mem = dom.child("memory");
  const std::string unit = mem.attribute("unit").as_string("KiB");
  const unsigned long long amount = mem.text().as_ullong();
  f.memory_mb = static_cast<int>(unit == "MiB" ? amount : unit == "GiB" ? amount * 1024 : amount / 1024);
  f.vcpus = dom.child("vcpu").text().as_int();
  for (auto iface : dom.child("devices").children("interface")) {
    InterfaceInfo info;
    info.mac = iface.child("mac").attribute("address").as_string();
    info.network = iface.child("source").attribute("network").as_string();
    f.interfaces.push_back(info);
  }
  return f;
}

std::string random_mac() {
  thread_local std::mt19937 rng{std::random_device{}()};
  char buf[18];
  std::snprintf(buf, sizeof buf, "52:54:00:%02x:%02x:%02x", static_cast<unsigned>(rng() & 0xff),
                static_cast<unsigned>(rng() & 0xff), static_cast<unsigned>(rng() & 0xff));
  return buf;
}

}  // namespace virtcap::libvirt
