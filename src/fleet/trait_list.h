// A host's trait ids in the index: sorted, delta-encoded as LEB128 varints,
// so a host with 35 traits out of a few hundred costs about 35 bytes instead
// of 140 (at 1,000,000 hosts: ~60 MB instead of ~165 MB). Written whole at
// each change of the host, read whole; nothing else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace virtcap::fleet {

class TraitList {
 public:
  // `ids` sorted ascending, no duplicates.
  void assign(const std::vector<std::uint32_t>& ids) {
    std::vector<std::uint8_t> out;
    out.reserve(ids.size() + ids.size() / 4);
    std::uint32_t prev = 0;
    for (const auto id : ids) {
      for (std::uint32_t d = id - prev;; d >>= 7) {
        if (d < 0x80) {
          out.push_back(static_cast<std::uint8_t>(d));
          break;
        }
        out.push_back(static_cast<std::uint8_t>(d | 0x80));
      }
      prev = id;
    }
    bytes_ = std::vector<std::uint8_t>(out.begin(), out.end());  // exactly its size
  }
  void clear() { std::vector<std::uint8_t>().swap(bytes_); }
  // Calls f(id) for each id, ascending.
  template <class F>
  void for_each(F&& f) const {
    std::uint32_t id = 0, d = 0;
    unsigned shift = 0;
    for (const auto b : bytes_) {
      d |= static_cast<std::uint32_t>(b & 0x7f) << shift;
      if (b & 0x80) {
        shift += 7;
        continue;
      }
      id += d;
      f(id);
      d = 0;
      shift = 0;
    }
  }
  std::vector<std::uint32_t> ids() const {
    std::vector<std::uint32_t> out;
    for_each([&out](std::uint32_t id) { out.push_back(id); });
    return out;
  }
  std::size_t memory_bytes() const { return sizeof(*this) + bytes_.capacity(); }

 private:
  std::vector<std::uint8_t> bytes_;
};

}  // namespace virtcap::fleet
