#include "imagecache/vmdk.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace virtcap::imagecache::vmdk {
namespace {

// QEMU's format probe looks at this many leading bytes (zero beyond the end).
constexpr std::size_t kProbeBytes = 512;
// scanf's %10s and %511[...] widths in QEMU's extent pattern.
constexpr std::size_t kTokenWidth = 10, kNameWidth = 511;
// QEMU keeps a backing file name in a PATH_MAX buffer.
constexpr std::size_t kMaxHintName = 4095;
constexpr std::string_view kHintKey = "parentFileNameHint";

bool c_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

std::uint64_t le64_at(std::span<const std::uint8_t> b, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i)
    v |= std::uint64_t{at + i < b.size() ? b[at + i] : std::uint8_t{0}} << (8 * i);
  return v;
}

// A cursor over a descriptor text with scanf's conversions.
struct Scan {
  std::string_view s;
  std::size_t at;
  void skip_space() {
    while (at < s.size() && c_space(s[at])) ++at;
  }
  // %Ns: skips white space, then 1..N non-space characters.
  std::string_view token(std::size_t width) {
    skip_space();
    const std::size_t from = at;
    while (at < s.size() && at - from < width && !c_space(s[at])) ++at;
    return s.substr(from, at - from);
  }
  // %lld: skips white space, an optional sign, then at least one digit.
  bool integer() {
    skip_space();
    if (at < s.size() && (s[at] == '+' || s[at] == '-')) ++at;
    const std::size_t from = at;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') ++at;
    return at > from;
  }
};

ExtentKind kind_of(std::string_view type) {
  if (type == "FLAT" || type == "VMFS") return ExtentKind::flat;
  if (type == "SPARSE" || type == "VMFSSPARSE") return ExtentKind::sparse;
  return ExtentKind::other;
}

// QEMU's pattern `%10s %lld %10s "%511[^\n\r"]"` from one line start; the
// extent when access, sectors, type and name all matched and access is RW.
void scan_line(std::string_view text, std::size_t at, std::vector<Extent>& out) {
  Scan sc{text, at};
  const std::string_view access = sc.token(kTokenWidth);
  if (access.empty() || !sc.integer()) return;
  const std::string_view type = sc.token(kTokenWidth);
  if (type.empty()) return;
  sc.skip_space();
  if (sc.at >= text.size() || text[sc.at] != '"') return;
  const std::size_t from = ++sc.at;
  while (sc.at < text.size() && sc.at - from < kNameWidth && text[sc.at] != '\n' && text[sc.at] != '\r' &&
         text[sc.at] != '"')
    ++sc.at;
  if (sc.at == from || access != "RW") return;
  out.push_back({std::string(text.substr(from, sc.at - from)), kind_of(type)});
}

}  // namespace

bool probes_as_text_descriptor(std::span<const std::uint8_t> head) {
  std::array<char, kProbeBytes> buf{};
  std::memcpy(buf.data(), head.data(), std::min(head.size(), buf.size()));
  const std::string_view b(buf.data(), buf.size());
  std::size_t p = 0;
  while (p < b.size()) {
    if (b[p] == '#') {  // a comment line
      while (p < b.size() && b[p] != '\n') ++p;
      ++p;
      continue;
    }
    if (b[p] == ' ') {  // a line of spaces (and an optional CR)
      while (p < b.size() && b[p] == ' ') ++p;
      if (p < b.size() && b[p] == '\r') ++p;
      if (p == b.size() || b[p] != '\n') return false;
      ++p;
      continue;
    }
    const std::string_view rest = b.substr(p);
    for (const char* v : {"version=1", "version=2", "version=3"}) {
      const std::string_view key(v);
      if (rest.substr(0, key.size()) != key) continue;
      const std::string_view tail = rest.substr(key.size());
      if (tail.substr(0, 1) == "\n" || tail.substr(0, 2) == "\r\n") return true;
    }
    return false;
  }
  return false;
}

std::vector<Extent> extents(std::string_view text) {
  text = text.substr(0, text.find('\0'));
  std::vector<Extent> out;
  for (std::size_t at = 0; at < text.size();) {
    scan_line(text, at, out);
    const auto nl = text.find('\n', at);
    if (nl == std::string_view::npos) break;
    at = nl + 1;
  }
  return out;
}

ParentHint parent_hint(std::span<const std::uint8_t> window) {
  // QEMU's buffer: the window, zero past the end of the file, plus a NUL.
  std::array<char, kParentHintWindow + 1> buf{};
  std::memcpy(buf.data(), window.data(), std::min(window.size(), kParentHintWindow));
  const std::string_view all(buf.data(), buf.size());
  const std::string_view text = all.substr(0, all.find('\0'));
  const auto key = text.find(kHintKey);
  if (key == std::string_view::npos) return {};
  // QEMU skips the key and the two characters it expects to be `="`,
  // whatever they are, then reads up to the next quote (strchr: a NUL first
  // means no name, and QEMU refuses the image).
  const std::size_t from = key + kHintKey.size() + 2;
  if (from >= all.size())
    return {ParentHint::Kind::malformed, {}, "parentFileNameHint runs past the descriptor"};
  const auto end = all.find_first_of(std::string_view("\"\0", 2), from);
  if (end == std::string_view::npos || all[end] != '"')
    return {ParentHint::Kind::malformed, {}, "parentFileNameHint has no closing quote"};
  if (end - from > kMaxHintName)
    return {ParentHint::Kind::malformed, {}, "parentFileNameHint is longer than 4095 bytes"};
  if (end == from) return {};
  return {ParentHint::Kind::named, std::string(all.substr(from, end - from)), {}};
}

SparseHeader sparse_header(std::span<const std::uint8_t> head) {
  // "KDMV", then version u32 @4, flags u32 @8, capacity u64 @12, grain size
  // u64 @20, descriptor offset u64 @28, descriptor size u64 @36 (little-endian).
  return {le64_at(head, 12), le64_at(head, 28)};
}

}  // namespace virtcap::imagecache::vmdk
