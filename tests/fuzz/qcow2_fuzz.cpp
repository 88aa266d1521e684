// Fuzzes the pure qcow2 header parser: any bytes must give a header or a typed
// error, never a crash or an out-of-bounds read (ASan watches the span), and
// whatever it accepts must satisfy the format's invariants.
//
// Each input is parsed three ways: as a whole file, as the head of a file of
// unknown size, and as the first half of a file of the input's size (so the
// "name is beyond the supplied bytes" path and complete_backing_name run).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "imagecache/qcow2.h"

namespace qc = virtcap::imagecache;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_error(const qc::Qcow2Error& e) {
  check(static_cast<int>(e.code) >= static_cast<int>(qc::Qcow2Errc::not_qcow2) &&
        static_cast<int>(e.code) <= static_cast<int>(qc::Qcow2Errc::io_error));
  // The pure parser knows no path and does no I/O or chain walking.
  check(e.path.empty());
  check(e.code != qc::Qcow2Errc::io_error && e.code != qc::Qcow2Errc::chain_loop &&
        e.code != qc::Qcow2Errc::chain_too_deep);
  const std::string text = e.describe();
  check(!text.empty() && text.back() == '.');
  check(text.find('\0') == std::string::npos);
  check(!qc::to_string(e.code).empty());
}

void check_complete_name(const qc::Qcow2Header& h) {
  check(!h.backing_name_pending());
  if (!h.has_backing()) {
    check(h.backing_file.empty() && !h.backing_is_path);
    return;
  }
  check(h.backing_file.size() == h.backing_file_size);
  check(h.backing_file.size() <= qc::kQcow2MaxBackingName);
  check(h.backing_file.find('\0') == std::string::npos);
  check(h.backing_is_path == !qc::backing_has_protocol(h.backing_file));
  const std::string full = qc::resolve_backing("/var/lib/virtcap/instances/x/disk", h.backing_file);
  if (h.backing_is_path) {
    check(!full.empty() && full.front() == '/');
  } else {
    check(full == h.backing_file);
  }
}

void check_header(const qc::Qcow2Header& h, std::span<const std::uint8_t> bytes, std::uint64_t file_size) {
  check(qc::has_qcow2_magic(bytes));
  check(h.version == 2 || h.version == 3);
  check(h.cluster_bits >= 9 && h.cluster_bits <= 21);
  check(h.header_length >= 72 && h.header_length <= h.cluster_size() && h.header_length <= bytes.size());
  if (h.version == 2) check(h.header_length == 72 && h.incompatible_features == 0 && h.refcount_order == 4);
  if (h.version == 3) check(h.header_length >= 104);
  check(h.backing_format.size() <= 15 && h.backing_format.find('\0') == std::string::npos);
  if (h.has_backing()) {
    check(h.backing_file_size <= qc::kQcow2MaxBackingName);
    // The name fits in the file, without overflow.
    const std::uint64_t size = std::max<std::uint64_t>(file_size, bytes.size());
    check(h.backing_file_offset <= size && h.backing_file_size <= size - h.backing_file_offset);
  }
  if (h.backing_name_pending()) {
    check(h.has_backing() && h.backing_file.empty());
    check(h.needed_bytes == h.backing_file_offset + h.backing_file_size);
    check(h.needed_bytes > bytes.size());
  } else {
    check_complete_name(h);
  }
}

// What a reader ends up with: a complete header or an error code.
struct Outcome {
  bool ok = false;
  qc::Qcow2Errc code = qc::Qcow2Errc::io_error;
  qc::Qcow2Header h;
};

Outcome fail(const qc::Qcow2Error& e) {
  check_error(e);
  Outcome o;
  o.code = e.code;
  return o;
}

Outcome parse_as(std::span<const std::uint8_t> bytes, std::uint64_t file_size,
                 std::span<const std::uint8_t> whole) {
  auto r = qc::parse_header(bytes, file_size);
  if (!r.ok()) return fail(r.error());
  Outcome o;
  o.h = r.value();
  check_header(o.h, bytes, file_size);
  if (o.h.backing_name_pending()) {
    // Fetch the name from the whole input, as the file reader would with pread.
    std::span<const std::uint8_t> name;
    if (o.h.backing_file_offset < whole.size()) {
      const auto offset = static_cast<std::size_t>(o.h.backing_file_offset);
      name = whole.subspan(offset, std::min<std::size_t>(o.h.backing_file_size, whole.size() - offset));
    }
    auto done = qc::complete_backing_name(o.h, name);
    if (!done.ok()) {
      check(name.size() < o.h.backing_file_size || done.error().code == qc::Qcow2Errc::nul_in_name);
      return fail(done.error());
    }
    check_complete_name(o.h);
  }
  o.ok = true;
  return o;
}

bool same(const qc::Qcow2Header& a, const qc::Qcow2Header& b) {
  return a.version == b.version && a.backing_file_offset == b.backing_file_offset &&
         a.backing_file_size == b.backing_file_size && a.cluster_bits == b.cluster_bits &&
         a.virtual_size == b.virtual_size && a.incompatible_features == b.incompatible_features &&
         a.header_length == b.header_length && a.backing_file == b.backing_file &&
         a.backing_format == b.backing_format && a.backing_is_path == b.backing_is_path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> whole(data, size);
  const Outcome full = parse_as(whole, size, whole);
  if (full.ok) check(qc::has_qcow2_magic(whole));

  // Not knowing the file size only moves the name's bounds check to the
  // fetch: the outcome is the same, except that a name past the end may be
  // reported after another error, and that no bytes of a file of unknown
  // size are too few rather than an empty file.
  const Outcome unknown = parse_as(whole, qc::kQcow2UnknownFileSize, whole);
  check(unknown.ok == full.ok);
  if (full.ok) check(same(unknown.h, full.h));
  if (size == 0) {
    check(full.code == qc::Qcow2Errc::not_qcow2 && unknown.code == qc::Qcow2Errc::truncated);
  } else if (!full.ok && full.code != qc::Qcow2Errc::offset_past_eof) {
    check(unknown.code == full.code);
  }

  // Given only the first half, the parser either reaches the same outcome
  // (fetching the name if needed) or says the bytes were too few.
  const Outcome half = parse_as(whole.first(size / 2), size, whole);
  if (half.ok) check(full.ok && same(half.h, full.h));
  if (!half.ok && half.code != qc::Qcow2Errc::truncated) check(!full.ok && half.code == full.code);
  if (full.ok) check(half.ok || half.code == qc::Qcow2Errc::truncated);
  return 0;
}
