// Which mount a file open at an fd is on: statx(STATX_MNT_ID), which tells a
// bind mount of the same filesystem apart from the directory it shows (the
// device and inode numbers of the two are equal).
#pragma once

#include <cstdint>

namespace virtcap {

struct MountPlace {
  std::uint64_t mnt_id = 0;
  bool has_mnt_id = false;  // false on kernels before 5.8 (the device alone then decides)
  std::uint32_t dev_major = 0, dev_minor = 0;
  bool is_dir = false;
  bool operator==(const MountPlace&) const = default;
};

// 0, or the errno of statx.
int mount_place(int fd, MountPlace& out);

}  // namespace virtcap
