// One agent per state directory: an exclusive flock on
// <state_path>/virtcap.lock, held for the life of the process, with the
// holder's pid written in the file for the error a second start prints.
#pragma once

#include <string>

#include "common/fd.h"
#include "virtcap/error.h"

namespace virtcap {

class StateLock {
 public:
  // Creates state_path if needed. Fails with Errc::conflict, naming the
  // holder's pid, when another process holds the lock; io_error otherwise.
  static Result<StateLock> acquire(const std::string& state_path);
  const std::string& path() const { return path_; }

 private:
  StateLock(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

}  // namespace virtcap
