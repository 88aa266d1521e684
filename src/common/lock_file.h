// The two file-system steps that several modules repeat: an exclusive flock
// that a signal cannot break, and creating a directory with its parents.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "virtcap/error.h"

namespace virtcap {

// flock(fd, LOCK_EX | LOCK_NB), retried when a signal interrupts it. 0 once
// held; otherwise the errno (EWOULDBLOCK: another open file holds it).
int lock_file(int fd);

// Called with an open descriptor of each directory make_dirs created.
using OnDirCreated = std::function<Status(int dir_fd, const std::string& path)>;

// Creates each missing directory of `dir`, from the top, with `mode` (less
// the umask), and hands each one created to `on_created` (e.g. to set its
// exact mode and group). Existing directories are left as they are. Errors
// name the directory as "<what> <path>".
Status make_dirs(const std::string& dir, mode_t mode, std::string_view what = "directory",
                 const OnDirCreated& on_created = {});

}  // namespace virtcap
