// Which other files an image makes QEMU open: its format, told by magic, and
// the backing / data file names stored in it. Formats (docs/imagecache.md):
//   qcow2 (v2, v3)  backing name + backing-format extension + external data file
//   qcow (v1)       backing name (no declared format: QEMU probes it)
//   qed             backing name; features bit 2 declares a raw backing
//   vmdk            as QEMU reads it (vmdk.h): text descriptors (probed as
//                   QEMU probes them), "KDMV" and "COWD" sparse files; the
//                   parent hint (opened as vmdk) and every extent
//   anything else   no magic above: raw (QEMU's other formats cannot carry a
//                   backing file)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "imagecache/vmdk.h"
#include "virtcap/error.h"

namespace virtcap::imagecache {

struct ImageRefs {
  std::string format;                 // "qcow2", "qcow", "qed", "vmdk", "raw"
  std::string backing;                // as stored; empty: none
  std::string backing_format;         // as declared; "": none declared (QEMU probes)
  std::string data_file;              // qcow2 external data file, as stored; empty: none
  std::vector<vmdk::Extent> extents;  // VMDK extents, as written (relative: to the image's directory)
};

// Reads the head of the file open at fd (one pread of 4 KiB in the common
// case) and reports what it refers to. `declared_format` is the format the
// referring image declares for it ("" for a top-level disk: probe by magic);
// a declared qcow2/qcow/qed/vmdk that the magic contradicts is an error, as
// it is for QEMU. Errors are one sentence naming `path`; `sys_errno` is set
// for a failed read.
struct ProbeError {
  std::string message;
  int sys_errno = 0;
};
Result<ImageRefs, ProbeError> probe_image(int fd, const std::string& path, std::string_view declared_format);

// True for a format name QEMU knows that can never refer to another file.
bool format_has_no_references(std::string_view format);

}  // namespace virtcap::imagecache
