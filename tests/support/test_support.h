// Small helpers shared by tests: temporary directories, files, and running
// real tools (qemu-img) by argv.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace virtcap::testing {

namespace fs = std::filesystem;

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "virtcap-test") {
    std::string tmpl = (fs::temp_directory_path() / (tag + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string sub(const std::string& rel) const { return (path_ / rel).string(); }
  std::string write(const std::string& rel, const std::string& text) const {
    fs::create_directories((path_ / rel).parent_path());
    std::ofstream(path_ / rel, std::ios::binary) << text;
    return sub(rel);
  }

 private:
  fs::path path_;
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs argv; fails the test if it cannot start or exits non-zero.
inline proc::Output must_run(const std::vector<std::string>& argv) {
  auto r = proc::run(argv);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (!r.ok()) return {};
  EXPECT_EQ(r->exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r->err;
  return r.value();
}

// LeakSanitizer refuses to run under ptrace (strace): in the ASan build a
// traced command keeps every other ASan check but not the leak check.
// "ASAN_OPTIONS=...", for strace -E.
inline std::string sanitizer_options() {
  const char* v = std::getenv("ASAN_OPTIONS");
  return std::string("ASAN_OPTIONS=") + (v && *v ? std::string(v) + ":" : "") + "detect_leaks=0";
}

inline nlohmann::json qemu_img_info(const std::string& path) {
  auto out = must_run({"qemu-img", "info", "--force-share", "--output=json", path});
  return nlohmann::json::parse(out.out.empty() ? "{}" : out.out);
}

inline void make_raw_image(const std::string& path, const std::string& size = "1M") {
  must_run({"qemu-img", "create", "-q", "-f", "raw", path, size});
}

inline void make_qcow2_image(const std::string& path, const std::string& size = "1M") {
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", path, size});
}

// A libvirt test-driver node file: each connection to test:///<file> gets
// its own state.
inline std::string write_test_node(const TempDir& dir, const std::string& name = "node.xml") {
  return dir.write(name,
                   "<node>\n"
                   "  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>"
                   "<active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>\n"
                   "  <memory>8388608</memory>\n"
                   "</node>\n");
}

inline std::int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

inline ino_t inode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

inline void set_mtime(const std::string& path, std::int64_t unix_seconds) {
  struct timespec ts[2] = {{unix_seconds, 0}, {unix_seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, 0), 0) << path;
}

// Every entry (recursively) under dir, relative, sorted: to prove nothing
// was lost or left behind.
inline std::vector<std::string> tree(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec))
    out.push_back(fs::relative(it->path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace virtcap::testing
