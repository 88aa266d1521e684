// qcow2 header layout (all integers big-endian), as far as this reader uses it:
//
//   off  size  field
//     0     4  magic "QFI\xfb"
//     4     4  version (2 or 3)
//     8     8  backing_file_offset (0: no backing file)
//    16     4  backing_file_size   (name length, no terminating NUL)
//    20     4  cluster_bits        (cluster size = 1 << cluster_bits)
//    24     8  size                (virtual size in bytes)
//    32     4  crypt_method
//    60     4  nb_snapshots
//   --- version 2 headers end here at 72 ---
//    72     8  incompatible_features
//    80     8  compatible_features
//    88     8  autoclear_features
//    96     4  refcount_order
//   100     4  header_length       (>= 104)
//   104     1  compression_type    (only when header_length > 104)
//
// Header extensions follow the header (at 72 for v2, header_length for v3):
// u32 type, u32 length, then `length` bytes of data padded with zeros to a
// multiple of 8. Type 0 ends the list. They must stay inside the first cluster
// and before the backing file name when the name is in that cluster.
#include "imagecache/qcow2.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>

#include "common/fd.h"

namespace virtcap::imagecache {
namespace {

constexpr std::uint8_t kMagic[4] = {'Q', 'F', 'I', 0xfb};
constexpr std::uint64_t kV2HeaderLength = 72;
constexpr std::uint64_t kV3MinHeaderLength = 104;
constexpr std::uint32_t kMinClusterBits = 9;   // 512-byte clusters
constexpr std::uint32_t kMaxClusterBits = 21;  // 2 MiB clusters
constexpr std::uint32_t kExtEnd = 0;
constexpr std::uint32_t kExtBackingFormat = 0xE2792ACA;
constexpr std::uint32_t kExtDataFile = 0x44415441;  // qcow2.txt: "External data file name string"
// QEMU keeps the backing format in a 16-byte, NUL-terminated field.
constexpr std::uint32_t kMaxBackingFormat = 15;

// Callers check bounds before every read: `at + N <= bytes.size()`.
std::uint32_t be32(std::span<const std::uint8_t> b, std::uint64_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) | (std::uint32_t{b[at + 2]} << 8) |
         std::uint32_t{b[at + 3]};
}

std::uint64_t be64(std::span<const std::uint8_t> b, std::uint64_t at) {
  return (std::uint64_t{be32(b, at)} << 32) | be32(b, at + 4);
}

// True when [offset, offset + length) lies within [0, limit), without overflow.
bool within(std::uint64_t offset, std::uint64_t length, std::uint64_t limit) {
  return offset <= limit && length <= limit - offset;
}

Qcow2Error make(Qcow2Errc code, std::string detail) {
  Qcow2Error e;
  e.code = code;
  e.detail = std::move(detail);
  return e;
}

std::string hex32(std::uint32_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += digits[(v >> shift) & 0xf];
  return out;
}

// Bytes from the file shown in a message: printable ASCII as is, the rest as \xNN.
std::string printable(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 0xf];
    }
  }
  return out;
}

// "the file is only N bytes long" or "only N bytes were supplied", for truncated errors.
std::string shortfall(std::uint64_t have, std::uint64_t file_size) {
  if (have >= file_size) return "the file is only " + std::to_string(have) + " bytes long";
  return "only the first " + std::to_string(have) + " bytes were supplied";
}

// Validates the backing file name's bytes and stores them in the header.
Result<void, Qcow2Error> take_backing_name(Qcow2Header& h, std::span<const std::uint8_t> name) {
  const auto nul = std::find(name.begin(), name.end(), std::uint8_t{0});
  if (nul != name.end()) {
    return make(Qcow2Errc::nul_in_name, "at byte " + std::to_string(nul - name.begin()) + " of " +
                                            std::to_string(name.size()) + " (\"" + printable(name) + "\")");
  }
  h.backing_file.assign(reinterpret_cast<const char*>(name.data()), name.size());
  h.backing_is_path = !backing_has_protocol(h.backing_file);
  h.needed_bytes = 0;
  return {};
}

// Walks the header extensions in [start, end), reading only within `bytes`.
Result<void, Qcow2Error> read_extensions(Qcow2Header& h, std::span<const std::uint8_t> bytes,
                                         std::uint64_t file_size, std::uint64_t start, std::uint64_t end,
                                         const char* end_what) {
  std::uint64_t pos = start;
  while (pos < end) {
    // The 8-byte type/length pair must itself fit in the area.
    if (end - pos < 8) {
      return make(Qcow2Errc::bad_extension, "the extension header at byte " + std::to_string(pos) +
                                                " crosses byte " + std::to_string(end) + ", " + end_what);
    }
    if (!within(pos, 8, bytes.size())) {
      return make(Qcow2Errc::truncated, "the header extensions continue past byte " +
                                            std::to_string(bytes.size()) + ", and " +
                                            shortfall(bytes.size(), file_size));
    }
    const std::uint32_t type = be32(bytes, pos);
    const std::uint32_t length = be32(bytes, pos + 4);
    if (type == kExtEnd) break;
    const std::uint64_t data = pos + 8;
    if (!within(data, length, end)) {
      return make(Qcow2Errc::bad_extension, "extension " + hex32(type) + " at byte " + std::to_string(pos) +
                                                " is " + std::to_string(length) +
                                                " bytes long, running past byte " + std::to_string(end) +
                                                ", " + end_what);
    }
    if (!within(data, length, bytes.size())) {
      return make(Qcow2Errc::truncated, "extension " + hex32(type) + " at byte " + std::to_string(pos) +
                                            " runs past byte " + std::to_string(bytes.size()) + ", and " +
                                            shortfall(bytes.size(), file_size));
    }
    const auto payload = bytes.subspan(data, length);
    if (type == kExtBackingFormat) {
      if (length > kMaxBackingFormat) {
        return make(Qcow2Errc::bad_extension, "the backing format extension is " + std::to_string(length) +
                                                  " bytes long; format names are at most " +
                                                  std::to_string(kMaxBackingFormat));
      }
      if (std::find(payload.begin(), payload.end(), std::uint8_t{0}) != payload.end()) {
        return make(Qcow2Errc::bad_extension,
                    "the backing format \"" + printable(payload) + "\" contains a NUL byte");
      }
      h.backing_format.assign(reinterpret_cast<const char*>(payload.data()), payload.size());
    } else if (type == kExtDataFile) {
      if (length == 0 || std::find(payload.begin(), payload.end(), std::uint8_t{0}) != payload.end()) {
        return make(Qcow2Errc::bad_extension, "the external data file name is empty or contains a NUL byte");
      }
      h.data_file.assign(reinterpret_cast<const char*>(payload.data()), payload.size());
    }
    // Unknown extensions (feature table, bitmaps, ...) are skipped. Data is
    // padded to a multiple of 8; length < 2^32, so this cannot overflow.
    pos = data + ((std::uint64_t{length} + 7) & ~std::uint64_t{7});
  }
  return {};
}

// ---- file side --------------------------------------------------------------

Qcow2Error io_error(const std::string& path, const char* what, int err) {
  Qcow2Error e = make(Qcow2Errc::io_error, std::string(what) + ": " + std::system_category().message(err));
  e.path = path;
  e.sys_errno = err;
  return e;
}

// The file's head. The first read is one page, which holds the whole header
// area of every image QEMU writes (header, extensions, backing name: well under
// 1 KiB) and costs less than copying 64 KiB. Only when the header area runs
// past it is the rest of the first kQcow2HeadRead bytes read.
constexpr std::size_t kFirstRead = kQcow2FirstRead;

// Not copyable or movable: `data` may point into `page`.
struct Head {
  Head() = default;
  Head(const Head&) = delete;
  Head& operator=(const Head&) = delete;

  std::array<std::uint8_t, kFirstRead> page;
  std::unique_ptr<std::uint8_t[]> big;  // kQcow2HeadRead bytes, only when needed
  std::uint8_t* data = page.data();
  std::size_t capacity = kFirstRead;
  std::size_t size = 0;

  std::span<const std::uint8_t> bytes() const { return {data, size}; }
  // pread_full stops short only at the end of the file, so then we know its size.
  bool saw_eof() const { return size < capacity; }
  std::uint64_t file_size() const { return saw_eof() ? size : kQcow2UnknownFileSize; }
};

Result<void, Qcow2Error> read_head(int fd, const std::string& path, Head& head) {
  const long long n = pread_full(fd, head.data, head.capacity, 0);
  if (n < 0) return io_error(path, "pread", static_cast<int>(-n));
  head.size = static_cast<std::size_t>(n);
  return {};
}

// Extends a full first read to kQcow2HeadRead bytes, reading only the rest.
Result<void, Qcow2Error> grow_head(int fd, const std::string& path, Head& head) {
  head.big = std::make_unique_for_overwrite<std::uint8_t[]>(kQcow2HeadRead);
  std::memcpy(head.big.get(), head.data, head.size);
  head.data = head.big.get();
  head.capacity = kQcow2HeadRead;
  const long long n = pread_full(fd, head.data + head.size, head.capacity - head.size, head.size);
  if (n < 0) return io_error(path, "pread", static_cast<int>(-n));
  head.size += static_cast<std::size_t>(n);
  return {};
}

Qcow2Error with_path(Qcow2Error e, const std::string& path) {
  e.path = path;
  return e;
}

// Parses a head already read from fd, reading more of the head if the header
// area needs it and fetching a backing name that lies beyond it.
Result<Qcow2Header, Qcow2Error> parse_head(int fd, const std::string& path, Head& head) {
  auto parsed = parse_header(head.bytes(), head.file_size());
  if (!parsed.ok() && parsed.error().code == Qcow2Errc::truncated && !head.saw_eof() &&
      head.capacity < kQcow2HeadRead) {
    if (auto grown = grow_head(fd, path, head); !grown.ok()) return grown.error();
    parsed = parse_header(head.bytes(), head.file_size());
  }
  if (!parsed.ok()) return with_path(parsed.error(), path);

  Qcow2Header& h = parsed.value();
  if (h.backing_name_pending()) {
    // pread takes a signed offset: a name beyond it cannot be in any file.
    constexpr auto kMaxOffset = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
    std::size_t got = 0;
    if (within(h.backing_file_offset, h.backing_file_size, kMaxOffset)) {
      // The name is at most kQcow2MaxBackingName bytes: the page is reused.
      static_assert(kQcow2MaxBackingName <= kFirstRead);
      const long long n = pread_full(fd, head.page.data(), h.backing_file_size, h.backing_file_offset);
      if (n < 0) return io_error(path, "pread of the backing file name", static_cast<int>(-n));
      got = static_cast<std::size_t>(n);
    }
    auto done = complete_backing_name(h, {head.page.data(), got});
    if (!done.ok()) return with_path(done.error(), path);
  }
  return parsed;
}

using Fd = UniqueFd;

}  // namespace

std::string_view to_string(Qcow2Errc code) {
  switch (code) {
    case Qcow2Errc::not_qcow2: return "not_qcow2";
    case Qcow2Errc::truncated: return "truncated";
    case Qcow2Errc::unsupported_version: return "unsupported_version";
    case Qcow2Errc::offset_past_eof: return "offset_past_eof";
    case Qcow2Errc::name_too_long: return "name_too_long";
    case Qcow2Errc::nul_in_name: return "nul_in_name";
    case Qcow2Errc::bad_extension: return "bad_extension";
    case Qcow2Errc::chain_loop: return "chain_loop";
    case Qcow2Errc::chain_too_deep: return "chain_too_deep";
    case Qcow2Errc::io_error: return "io_error";
  }
  return "io_error";
}

std::string Qcow2Error::describe() const {
  std::string out = path.empty() ? std::string("the buffer") : "'" + path + "'";
  switch (code) {
    case Qcow2Errc::not_qcow2: out += " is not a qcow2 image"; break;
    case Qcow2Errc::truncated: out += " is a truncated qcow2 image"; break;
    case Qcow2Errc::unsupported_version: out += " is a qcow2 image this reader does not support"; break;
    case Qcow2Errc::offset_past_eof: out += " has a qcow2 backing file name past the end of the file"; break;
    case Qcow2Errc::name_too_long:
      out += " has a qcow2 backing file name longer than " + std::to_string(kQcow2MaxBackingName) + " bytes";
      break;
    case Qcow2Errc::nul_in_name: out += " has a NUL byte inside its qcow2 backing file name"; break;
    case Qcow2Errc::bad_extension: out += " has a malformed qcow2 header extension"; break;
    case Qcow2Errc::chain_loop: out += " has a backing chain that loops"; break;
    case Qcow2Errc::chain_too_deep: out += " has a backing chain deeper than allowed"; break;
    case Qcow2Errc::io_error: out += " could not be read"; break;
  }
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  out += '.';
  return out;
}

bool has_qcow2_magic(std::span<const std::uint8_t> bytes) {
  return bytes.size() >= sizeof kMagic && std::equal(std::begin(kMagic), std::end(kMagic), bytes.begin());
}

bool backing_has_protocol(std::string_view name) {
  const auto pos = name.find_first_of(":/");
  return pos != std::string_view::npos && name[pos] == ':';
}

namespace {

// parse_header, step 1: the magic, the version, and the fields every version has.
Result<Qcow2Header, Qcow2Error> read_fixed_header(std::span<const std::uint8_t> bytes,
                                                  std::uint64_t file_size) {
  // Magic. Fewer than 4 bytes: a truncated qcow2 only if they begin the magic.
  if (bytes.size() < sizeof kMagic) {
    const bool magic_prefix = std::equal(bytes.begin(), bytes.end(), std::begin(kMagic));
    if (!magic_prefix || file_size == 0) {
      return make(Qcow2Errc::not_qcow2,
                  file_size == 0 ? "the file is empty" : "it is shorter than the 4-byte qcow2 magic");
    }
    return make(Qcow2Errc::truncated,
                "the 4-byte magic is incomplete, and " + shortfall(bytes.size(), file_size));
  }
  if (!has_qcow2_magic(bytes)) {
    return make(Qcow2Errc::not_qcow2,
                "it starts with \"" + printable(bytes.first(4)) + "\", not the magic \"QFI\\xfb\"");
  }

  if (bytes.size() < 8) {
    return make(Qcow2Errc::truncated,
                "the version field is incomplete, and " + shortfall(bytes.size(), file_size));
  }
  Qcow2Header h;
  h.version = be32(bytes, 4);
  if (h.version != 2 && h.version != 3) {
    return make(Qcow2Errc::unsupported_version,
                "version " + std::to_string(h.version) + "; only versions 2 and 3 are supported");
  }

  if (bytes.size() < kV2HeaderLength) {
    return make(Qcow2Errc::truncated, "the header needs " + std::to_string(kV2HeaderLength) + " bytes, and " +
                                          shortfall(bytes.size(), file_size));
  }
  h.backing_file_offset = be64(bytes, 8);
  h.backing_file_size = be32(bytes, 16);
  h.cluster_bits = be32(bytes, 20);
  h.virtual_size = be64(bytes, 24);
  h.crypt_method = be32(bytes, 32);
  h.nb_snapshots = be32(bytes, 60);

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return make(Qcow2Errc::unsupported_version, "cluster_bits is " + std::to_string(h.cluster_bits) +
                                                    ", outside the " + std::to_string(kMinClusterBits) +
                                                    ".." + std::to_string(kMaxClusterBits) + " qcow2 allows");
  }
  return h;
}

// Step 2: a version 3 header's own fields; its length must lie in the first
// cluster and in the bytes given.
Result<void, Qcow2Error> check_version3_fields(Qcow2Header& h, std::span<const std::uint8_t> bytes,
                                               std::uint64_t file_size) {
  const std::uint64_t cluster_size = h.cluster_size();
  if (bytes.size() < kV3MinHeaderLength) {
    return make(Qcow2Errc::truncated, "a version 3 header needs " + std::to_string(kV3MinHeaderLength) +
                                          " bytes, and " + shortfall(bytes.size(), file_size));
  }
  h.incompatible_features = be64(bytes, 72);
  h.compatible_features = be64(bytes, 80);
  h.autoclear_features = be64(bytes, 88);
  h.refcount_order = be32(bytes, 96);
  h.header_length = be32(bytes, 100);
  if (h.header_length < kV3MinHeaderLength) {
    return make(Qcow2Errc::truncated, "header_length is " + std::to_string(h.header_length) +
                                          ", less than the " + std::to_string(kV3MinHeaderLength) +
                                          " bytes of a version 3 header");
  }
  // The header and its extensions share the first cluster.
  if (h.header_length > cluster_size) {
    return make(Qcow2Errc::bad_extension, "header_length " + std::to_string(h.header_length) +
                                              " exceeds the " + std::to_string(cluster_size) +
                                              "-byte cluster");
  }
  if (h.header_length > bytes.size()) {
    return make(Qcow2Errc::truncated, "header_length is " + std::to_string(h.header_length) + ", and " +
                                          shortfall(bytes.size(), file_size));
  }
  if (h.header_length > kV3MinHeaderLength) h.compression_type = bytes[kV3MinHeaderLength];
  return {};
}

// Step 3: the backing file name's bounds, the header extensions, and the
// name itself when the bytes given hold it.
Result<void, Qcow2Error> read_extensions_and_backing(Qcow2Header& h, std::span<const std::uint8_t> bytes,
                                                     std::uint64_t file_size) {
  const std::uint64_t cluster_size = h.cluster_size();
  // The backing file name: offset 0 means none (its size is then ignored); a
  // zero size names nothing either.
  if (h.has_backing()) {
    if (h.backing_file_size > kQcow2MaxBackingName) {
      return make(Qcow2Errc::name_too_long, "backing_file_size is " + std::to_string(h.backing_file_size));
    }
    if (!within(h.backing_file_offset, h.backing_file_size, file_size)) {
      return make(Qcow2Errc::offset_past_eof,
                  std::to_string(h.backing_file_size) + " bytes at offset " +
                      std::to_string(h.backing_file_offset) +
                      (file_size == kQcow2UnknownFileSize
                           ? std::string(" cannot lie in any file")
                           : " but the file is " + std::to_string(file_size) + " bytes long"));
    }
  }

  // Header extensions run from the end of the header to the end of the first
  // cluster, or to the backing file name if that starts earlier.
  std::uint64_t ext_end = cluster_size;
  const char* end_what = "the end of the first cluster";
  if (h.backing_file_offset != 0 && h.backing_file_offset < ext_end) {
    ext_end = h.backing_file_offset;
    end_what = "where the backing file name starts";
  }
  auto ext = read_extensions(h, bytes, file_size, h.header_length, ext_end, end_what);
  if (!ext.ok()) return ext.error();

  if (h.has_backing()) {
    if (within(h.backing_file_offset, h.backing_file_size, bytes.size())) {
      auto name = take_backing_name(h, bytes.subspan(h.backing_file_offset, h.backing_file_size));
      if (!name.ok()) return name.error();
    } else {
      // Checked above: offset + size does not overflow.
      h.needed_bytes = h.backing_file_offset + h.backing_file_size;
    }
  }
  return {};
}

}  // namespace

Result<Qcow2Header, Qcow2Error> parse_header(std::span<const std::uint8_t> bytes, std::uint64_t file_size) {
  // Bytes we hold are in the file, whatever the caller believes its size is.
  file_size = std::max<std::uint64_t>(file_size, bytes.size());
  auto h = read_fixed_header(bytes, file_size);
  if (!h.ok()) return h.error();
  if (h.value().version == 3)
    if (auto st = check_version3_fields(h.value(), bytes, file_size); !st.ok()) return st.error();
  if (auto st = read_extensions_and_backing(h.value(), bytes, file_size); !st.ok()) return st.error();
  return h;
}

Result<void, Qcow2Error> complete_backing_name(Qcow2Header& header, std::span<const std::uint8_t> name) {
  if (!header.backing_name_pending()) return {};
  if (name.size() < header.backing_file_size) {
    return make(Qcow2Errc::offset_past_eof, std::to_string(header.backing_file_size) + " bytes at offset " +
                                                std::to_string(header.backing_file_offset) + ", but only " +
                                                std::to_string(name.size()) + " of them exist");
  }
  return take_backing_name(header, name.first(header.backing_file_size));
}

Result<Qcow2Header, Qcow2Error> read_header_fd(int fd, const std::string& path_for_errors) {
  Head head;
  auto r = read_head(fd, path_for_errors, head);
  if (!r.ok()) return r.error();
  return parse_head(fd, path_for_errors, head);
}

Result<Qcow2Header, Qcow2Error> read_header_with_head(int fd, const std::string& path_for_errors,
                                                      std::span<const std::uint8_t> first) {
  Head head;
  head.size = std::min(first.size(), head.capacity);
  std::memcpy(head.data, first.data(), head.size);
  return parse_head(fd, path_for_errors, head);
}

Result<Qcow2Header, Qcow2Error> read_header(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return io_error(path, "open", errno);
  return read_header_fd(fd.get(), path);
}

std::string resolve_backing(const std::string& disk_path, const std::string& backing) {
  if (backing.empty() || backing_has_protocol(backing)) return backing;
  const std::filesystem::path name(backing);
  if (name.is_absolute()) return name.lexically_normal().string();
  // Relative names are relative to the directory of the image that holds
  // them, not to the current directory.
  return (std::filesystem::path(disk_path).parent_path() / name).lexically_normal().string();
}

Result<std::vector<ChainLink>, Qcow2Error> backing_chain(const std::string& path, int max_depth) {
  std::vector<ChainLink> chain;
  std::vector<std::pair<dev_t, ino_t>> seen;  // identities of the images opened so far

  std::string current = path;
  std::string declared;  // the format the parent declares for `current`; "" for the top
  std::string parent;    // the image whose backing file `current` is
  auto with_context = [&](Qcow2Error e) {
    if (e.path.empty()) e.path = current;
    if (!parent.empty()) e.detail += " (backing file of '" + parent + "')";
    return e;
  };
  auto too_deep = [&]() {
    Qcow2Error e = make(Qcow2Errc::chain_too_deep, "it has more than " + std::to_string(max_depth) +
                                                       " images; the next one would be '" + current + "'");
    e.path = path;
    return e;
  };
  auto chain_text = [&]() {
    std::string out;
    for (const auto& link : chain) out += "'" + link.path + "' -> ";
    return out + "'" + current + "'";
  };

  while (true) {
    if (chain.size() >= static_cast<std::size_t>(std::max(max_depth, 0))) return too_deep();

    // A declared non-qcow2 format is reported as is: opening it as qcow2
    // would be wrong (a raw file may hold anything, including a qcow2 magic).
    if (!declared.empty() && declared != "qcow2") {
      chain.push_back(ChainLink{current, declared});
      return chain;
    }

    Fd fd(::open(current.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return with_context(io_error(current, "open", errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return with_context(io_error(current, "fstat", errno));
    const std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) {
      Qcow2Error e = make(Qcow2Errc::chain_loop, chain_text());
      e.path = current;
      return e;
    }
    seen.push_back(id);

    Head head;
    if (auto r = read_head(fd.get(), current, head); !r.ok()) return with_context(r.error());
    if (!has_qcow2_magic(head.bytes())) {
      if (declared == "qcow2") {
        return with_context(make(Qcow2Errc::not_qcow2, "it is declared qcow2 but has no qcow2 magic"));
      }
      chain.push_back(ChainLink{current, "raw"});
      return chain;
    }
    auto parsed = parse_head(fd.get(), current, head);
    if (!parsed.ok()) return with_context(parsed.error());
    chain.push_back(ChainLink{current, "qcow2"});

    const Qcow2Header& h = parsed.value();
    if (!h.has_backing() || h.backing_file.empty()) return chain;
    if (!h.backing_is_path) {
      if (chain.size() >= static_cast<std::size_t>(max_depth)) {
        current = h.backing_file;
        return too_deep();
      }
      chain.push_back(ChainLink{h.backing_file, h.backing_format, false});
      return chain;
    }
    parent = current;
    current = resolve_backing(parent, h.backing_file);
    declared = h.backing_format;
  }
}

}  // namespace virtcap::imagecache
