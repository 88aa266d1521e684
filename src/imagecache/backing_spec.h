// What a backing file string stored in an image names, the way QEMU reads it:
// a local file (and then which path open() is given), a remote/network
// source, or something this reader cannot follow.
//
// Handled (docs/imagecache.md, "Backing syntaxes"):
//   - plain paths: absolute as written; relative ones joined onto the
//     directory of the image that stores them (QEMU's path_combine). The
//     result is NOT normalised: "a/link/../b" is left for the kernel to
//     resolve, exactly as QEMU's open() does;
//   - "file:/abs/path" (and host_device:/host_cdrom:), the file protocol;
//   - "json:{...}" pseudo-protocol strings, flattened to dotted keys as QEMU
//     does, following "file.filename" / "filename";
//   - network protocols (nbd, rbd, http(s), iscsi, ssh, gluster, nfs, ...):
//     remote, never a local base file.
// Anything else - unparseable json:, an unknown protocol, a relative file:
// or json: name (QEMU resolves those against its own working directory),
// json: options that override the chain ("backing", "data-file") - is
// unreadable: the caller must not assume it uses no base.
#pragma once

#include <string>
#include <string_view>

namespace virtcap::imagecache {

struct BackingTarget {
  enum class Kind { local, remote, unreadable };
  Kind kind = Kind::unreadable;
  std::string path;    // local: what QEMU passes to open()
  std::string format;  // local: a format the json: options force; "" = the image's declared one, or probe
  std::string detail;  // remote: the protocol; unreadable: why, in words
};

// `image_dir` is the directory of the image holding the backing string, as
// the image was spelled when opened (no trailing slash needed).
BackingTarget classify_backing(std::string_view backing, std::string_view image_dir);

}  // namespace virtcap::imagecache
