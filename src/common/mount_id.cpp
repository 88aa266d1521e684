// Kept apart from <sys/stat.h>: glibc's struct statx has no stx_mnt_id yet,
// so this file uses the kernel's.
#include "common/mount_id.h"

#include <fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace virtcap {

int mount_place(int fd, MountPlace& out) {
  struct statx sx {};
  if (::syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MNT_ID, &sx) != 0) return errno;
  out.mnt_id = sx.stx_mnt_id;
  out.has_mnt_id = (sx.stx_mask & STATX_MNT_ID) != 0;
  out.dev_major = sx.stx_dev_major;
  out.dev_minor = sx.stx_dev_minor;
  out.is_dir = (sx.stx_mode & S_IFMT) == S_IFDIR;
  return 0;
}

}  // namespace virtcap
