// Native qcow2 overlay writer. The on-disk rules come from QEMU's
// docs/interop/qcow2.txt; "qcow2.txt <section>" below names the section each
// field or layout choice follows. No QEMU code is used.
#include "imagecache/qcow2_writer.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc >= 2.28)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/fd.h"
#include "imagecache/base_cache.h"  // kTempMarker, fsync_dir
#include "imagecache/qcow2.h"

namespace virtcap::imagecache {
namespace {

// qcow2.txt "Header": version 3 header fields, then (qcow2.txt "Additional
// fields") compression_type at byte 104, padded to header_length 112, which
// must be a multiple of 8 (qcow2.txt "Header padding").
constexpr std::uint32_t kVersion = 3;
constexpr std::uint32_t kHeaderLength = 112;
// qcow2.txt "Header", refcount_order: refcount_bits = 1 << 4 = 16, QEMU's default.
constexpr std::uint32_t kRefcountOrder = 4;
constexpr std::uint64_t kRefcountBytes = 2;
// qcow2.txt "Header extensions": type codes.
constexpr std::uint32_t kExtBackingFormat = 0xE2792ACA;
constexpr std::uint32_t kExtEnd = 0;
// Fixed cluster roles (see the layout in qcow2_writer.h).
constexpr std::uint64_t kRefcountTableCluster = 1;
constexpr std::uint64_t kRefcountBlockCluster = 2;
constexpr std::uint64_t kL1FirstCluster = 3;
// qcow2.txt "Cluster mapping": l2_entries = cluster_size / sizeof(uint64_t);
// one L1 entry therefore maps l2_entries clusters of guest data.
constexpr std::uint64_t kL2Entries = kOverlayClusterSize / 8;
constexpr std::uint64_t kBytesPerL1Entry = kL2Entries * kOverlayClusterSize;  // 512 MiB
// qcow2.txt "Host cluster management": refcount_block_entries =
// cluster_size * 8 / refcount_bits. One block covers this many clusters.
constexpr std::uint64_t kRefcountBlockEntries = kOverlayClusterSize * 8 / 16;

void put_be(std::vector<std::uint8_t>& b, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i, v >>= 8)
    b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t unit) { return (v + unit - 1) / unit * unit; }

Error io_error(const std::string& what, int err) {
  return make_error(Errc::io_error, what + ": " + std::strerror(err));
}

using Fd = UniqueFd;

bool valid_format_name(std::string_view f) {
  if (f.empty() || f.size() > kOverlayMaxFormatName) return false;
  for (char c : f)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

Status check_spec(const OverlaySpec& spec) {
  // qcow2.txt "Header", backing_file_size: "Must not be longer than 1023 bytes".
  if (spec.backing_file.empty() || spec.backing_file.size() > kQcow2MaxBackingName)
    return invalid_argument_error("an overlay's backing file name must be 1 to " +
                                  std::to_string(kQcow2MaxBackingName) + " bytes long; got " +
                                  std::to_string(spec.backing_file.size()));
  if (spec.backing_file.find('\0') != std::string::npos)
    return invalid_argument_error("an overlay's backing file name must not contain a NUL byte");
  if (!valid_format_name(spec.backing_format))
    return invalid_argument_error("an overlay's backing format must be 1 to " +
                                  std::to_string(kOverlayMaxFormatName) +
                                  " characters of [a-z0-9_-] (e.g. raw, qcow2)");
  if (spec.virtual_size % kSectorSize != 0)
    return invalid_argument_error("an overlay's virtual size must be a multiple of 512 bytes; got " +
                                  std::to_string(spec.virtual_size));
  // qcow2.txt "Header", size: QEMU's 32 MB L1 limit (see kOverlayMaxVirtualSize).
  if (spec.virtual_size > kOverlayMaxVirtualSize)
    return invalid_argument_error(
        "an overlay's virtual size must be at most " + std::to_string(kOverlayMaxVirtualSize) +
        " bytes (2 PiB, QEMU's limit with 64 KiB clusters); got " + std::to_string(spec.virtual_size));
  return {};
}

// Cluster 0: qcow2.txt "Header", then "Header extensions" (the backing format
// as a string extension, qcow2.txt "String header extensions", then the end
// marker), then the backing file name, which qcow2.txt "Header extensions"
// says belongs in the rest of the first cluster after the extension area.
OverlayPiece header_piece(const OverlaySpec& spec, std::uint64_t l1_entries) {
  const std::uint64_t ext_format_at = kHeaderLength;
  const std::uint64_t ext_end_at = ext_format_at + 8 + round_up(spec.backing_format.size(), 8);
  const std::uint64_t name_at = ext_end_at + 8;
  OverlayPiece p;
  p.offset = 0;
  p.bytes.assign(name_at + spec.backing_file.size(), 0);
  auto& b = p.bytes;
  put_be(b, 0, 0x514649FB, 4);  // magic "QFI\xfb"
  put_be(b, 4, kVersion, 4);
  put_be(b, 8, name_at, 8);  // backing_file_offset
  put_be(b, 16, spec.backing_file.size(), 4);
  put_be(b, 20, kOverlayClusterBits, 4);
  put_be(b, 24, spec.virtual_size, 8);
  // 32 crypt_method = 0 (none)
  put_be(b, 36, l1_entries, 4);
  // l1_table_offset: cluster aligned; with no entries there is no table and
  // the offset stays 0, as QEMU writes for a zero-size disk.
  put_be(b, 40, l1_entries ? kL1FirstCluster * kOverlayClusterSize : 0, 8);
  put_be(b, 48, kRefcountTableCluster * kOverlayClusterSize, 8);  // refcount_table_offset
  put_be(b, 56, 1, 4);                                            // refcount_table_clusters
  // 60 nb_snapshots = 0, 64 snapshots_offset = 0 (qcow2.txt "Snapshots": none).
  // 72/80/88 incompatible/compatible/autoclear features = 0: no dirty or
  // corrupt bit, no external data file, zlib, standard L2 entries, no lazy
  // refcounts, no bitmaps.
  put_be(b, 96, kRefcountOrder, 4);
  put_be(b, 100, kHeaderLength, 4);
  // 104 compression_type = 0 (zlib), then zero padding up to 112.
  put_be(b, ext_format_at, kExtBackingFormat, 4);
  put_be(b, ext_format_at + 4, spec.backing_format.size(), 4);
  std::memcpy(b.data() + ext_format_at + 8, spec.backing_format.data(), spec.backing_format.size());
  // Padding to a multiple of 8 is already zero; then the end marker (type 0,
  // length 0), already zero too.
  static_assert(kExtEnd == 0);
  std::memcpy(b.data() + name_at, spec.backing_file.data(), spec.backing_file.size());
  return p;
}

}  // namespace

Result<OverlayImage> render_overlay(const OverlaySpec& spec) {
  if (Status st = check_spec(spec); !st.ok()) return st.error();
  OverlayImage img;
  // qcow2.txt "Cluster mapping": enough L1 entries to map the whole disk; all
  // zero ("the L2 table and all clusters described by this L2 table are
  // unallocated"), so every read goes to the backing file (qcow2.txt
  // "Cluster mapping", last paragraph).
  img.l1_entries = (spec.virtual_size + kBytesPerL1Entry - 1) / kBytesPerL1Entry;
  const std::uint64_t l1_clusters = round_up(img.l1_entries * 8, kOverlayClusterSize) / kOverlayClusterSize;
  img.metadata_clusters = kL1FirstCluster + l1_clusters;
  img.file_size = img.metadata_clusters * kOverlayClusterSize;
  static_assert((kOverlayMaxVirtualSize / kBytesPerL1Entry) * 8 / kOverlayClusterSize + kL1FirstCluster <=
                    kRefcountBlockEntries,
                "one refcount block covers the metadata of the largest overlay");

  img.pieces.push_back(header_piece(spec, img.l1_entries));
  // qcow2.txt "Host cluster management": refcount table entry 0 points at the
  // one refcount block (cluster aligned, reserved bits 0-8 zero).
  OverlayPiece table{kRefcountTableCluster * kOverlayClusterSize, std::vector<std::uint8_t>(8, 0)};
  put_be(table.bytes, 0, kRefcountBlockCluster * kOverlayClusterSize, 8);
  img.pieces.push_back(std::move(table));
  // The block: refcount 1 ("used") for each metadata cluster, 0 (free) after.
  OverlayPiece block{kRefcountBlockCluster * kOverlayClusterSize,
                     std::vector<std::uint8_t>(img.metadata_clusters * kRefcountBytes, 0)};
  for (std::uint64_t c = 0; c < img.metadata_clusters; ++c) put_be(block.bytes, c * kRefcountBytes, 1, 2);
  img.pieces.push_back(std::move(block));
  return img;
}

Status write_overlay_fd(int fd, const OverlayImage& image, const std::string& path_for_errors) {
  for (const auto& piece : image.pieces) {
    std::size_t done = 0;
    while (done < piece.bytes.size()) {
      const ssize_t n = ::pwrite(fd, piece.bytes.data() + done, piece.bytes.size() - done,
                                 static_cast<off_t>(piece.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return io_error("cannot write qcow2 overlay " + path_for_errors, errno);
      if (n == 0)
        return make_error(Errc::io_error, "cannot write qcow2 overlay " + path_for_errors + ": no progress");
      done += static_cast<std::size_t>(n);
    }
  }
  if (::ftruncate(fd, static_cast<off_t>(image.file_size)) != 0)
    return io_error("cannot extend qcow2 overlay " + path_for_errors, errno);
  return {};
}

namespace {

// rename() that fails with EEXIST instead of replacing `to`. Filesystems
// without RENAME_NOREPLACE get link + unlink, which is just as safe.
int rename_noreplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  if (::link(from.c_str(), to.c_str()) != 0) return -1;
  ::unlink(from.c_str());
  return 0;
}

// `created` tells the caller whether `tmp` is ours to remove on failure.
Status write_and_sync(const std::string& tmp, const OverlayImage& image, Durability durability,
                      const DiskAccess& access, bool& created) {
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) return io_error("cannot create " + tmp, errno);
  created = true;
  if (Status st = access.apply(fd.get(), false, tmp); !st.ok()) return st;
  if (Status st = write_overlay_fd(fd.get(), image, tmp); !st.ok()) return st;
  if (durability != Durability::none && ::fsync(fd.get()) != 0) return io_error("cannot fsync " + tmp, errno);
  if (fd.close_checked() != 0) return io_error("cannot close " + tmp, errno);
  return {};
}

}  // namespace

Status fsync_file(const std::string& path, const DiskAccess& access) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return io_error("cannot open " + path + " to fsync it", errno);
  if (Status st = access.apply(fd.get(), false, path); !st.ok()) return st;
  if (::fsync(fd.get()) != 0) return io_error("cannot fsync " + path, errno);
  return {};
}

Status rename_into_place(const std::string& tmp, const std::string& path, Durability durability) {
  if (rename_noreplace(tmp, path) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return make_error(err == EEXIST ? Errc::already_exists : Errc::io_error,
                      "cannot rename " + tmp + " to " + path + ": " + std::strerror(err) +
                          (err == EEXIST ? " (an existing disk is never replaced)" : ""));
  }
  if (durability != Durability::file_and_directory) return {};
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return fsync_dir(dir.empty() ? "." : dir);
}

Status create_overlay(const std::string& path, const OverlaySpec& spec, Durability durability,
                      const DiskAccess& access) {
  auto image = render_overlay(spec);
  if (!image.ok()) return image.error();
  const std::string tmp = path + std::string(kTempMarker) + "overlay";
  bool created = false;
  if (Status st = write_and_sync(tmp, *image, durability, access, created); !st.ok()) {
    if (created) ::unlink(tmp.c_str());  // ours, half written; a file we did not create is left alone
    return st;
  }
  return rename_into_place(tmp, path, durability);
}

namespace {

Result<std::uint64_t> base_virtual_size(int fd, const std::string& base_path, std::string_view format) {
  if (format == "raw") {
    const off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return io_error("cannot find the size of base image " + base_path, errno);
    return static_cast<std::uint64_t>(end);
  }
  if (format != "qcow2")
    return invalid_argument_error("the native overlay writer handles raw and qcow2 bases, not '" +
                                  std::string(format) + "' (" + base_path +
                                  "); set [libvirt] overlay_writer = \"qemu-img\" for other formats");
  auto h = read_header_fd(fd, base_path);
  if (!h.ok()) {
    return make_error(h.error().code == Qcow2Errc::io_error ? Errc::io_error : Errc::invalid_argument,
                      h.error().describe());
  }
  // qcow2.txt "Header": crypt_method and incompatible_features bits 5-63;
  // QEMU refuses to open images it cannot read, so an overlay on them is useless.
  if (h->crypt_method != 0)
    return invalid_argument_error("base image " + base_path + " is encrypted (crypt_method " +
                                  std::to_string(h->crypt_method) +
                                  "); virtcap does not boot encrypted bases");
  if ((h->incompatible_features >> 5) != 0)
    return invalid_argument_error("base image " + base_path +
                                  " sets unknown qcow2 incompatible feature bits (" +
                                  std::to_string(h->incompatible_features) + "); QEMU cannot open it");
  return h->virtual_size;
}

}  // namespace

Result<OverlaySpec> overlay_spec_for_base(const std::string& base_path, std::string_view base_format,
                                          std::uint64_t virtual_size) {
  Fd fd(::open(base_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return io_error("cannot open base image " + base_path, errno);
  auto base_size = base_virtual_size(fd.get(), base_path, base_format);
  if (!base_size.ok()) return base_size.error();
  auto sectors = [&](std::uint64_t v, const char* what) -> Result<std::uint64_t> {
    if (v > kOverlayMaxVirtualSize)
      return invalid_argument_error(std::string(what) + " of " + std::to_string(v) +
                                    " bytes exceeds the qcow2 overlay limit of " +
                                    std::to_string(kOverlayMaxVirtualSize) + " bytes (" + base_path + ")");
    return round_up(v, kSectorSize);
  };
  auto base = sectors(*base_size, "base image size");
  if (!base.ok()) return base.error();
  auto wanted = sectors(virtual_size, "requested disk size");
  if (!wanted.ok()) return wanted.error();
  if (virtual_size != 0 && *wanted < *base)
    return invalid_argument_error("requested disk size " + std::to_string(virtual_size) +
                                  " is smaller than base image " + base_path + " (" + std::to_string(*base) +
                                  " bytes); an overlay cannot shrink its base");
  OverlaySpec spec;
  spec.backing_file = base_path;
  spec.backing_format = std::string(base_format);
  spec.virtual_size = std::max(*base, *wanted);
  return spec;
}

}  // namespace virtcap::imagecache
