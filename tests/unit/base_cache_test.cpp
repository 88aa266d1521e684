// Issue 19 (images and disks): a base keeps its source's holes, and nothing
// the cache or spawn creates is readable by other users, whatever the umask.
#include "imagecache/base_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "common/group.h"
#include "support/test_support.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;

// Sets the process umask for a scope (the modes must not depend on it).
struct Umask {
  mode_t old;
  explicit Umask(mode_t m) : old(::umask(m)) {}
  ~Umask() { ::umask(old); }
};

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string read_at(const std::string& path, off_t at, std::size_t n) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string s(n, '\0');
  EXPECT_EQ(::pread(fd.get(), s.data(), n, at), static_cast<ssize_t>(n));
  return s;
}

mode_t mode_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(BaseCache, ASparseImageStaysSparseInBase) {
  testing::TempDir d("virtcap-sparse");
  const std::string src = d.sub("image.raw");
  constexpr off_t kSize = off_t{10} << 30, kFar = (off_t{5} << 30) + 4096;
  const std::string head = random_bytes(512 << 10, 1), far = random_bytes(512 << 10, 2);
  {
    UniqueFd fd(::open(src.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_EQ(::ftruncate(fd.get(), kSize), 0);
    ASSERT_EQ(::pwrite(fd.get(), head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
    ASSERT_EQ(::pwrite(fd.get(), far.data(), far.size(), kFar), static_cast<ssize_t>(far.size()));
  }
  BaseCache cache(d.sub("instances"), "_base");
  Umask any(0);
  auto out = ensure_base_locked(cache, "img", src);
  ASSERT_TRUE(out.ok()) << out.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(out->base_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  EXPECT_LE(st.st_blocks * 512, 2 << 20)
      << "a 10 GiB image with 1 MiB of data must cost at most 2 MiB in _base";
  EXPECT_EQ(read_at(out->base_path, 0, head.size()), head);
  EXPECT_EQ(read_at(out->base_path, kFar, far.size()), far);
  EXPECT_EQ(read_at(out->base_path, off_t{1} << 30, 4096), std::string(4096, '\0'));
  EXPECT_EQ(out->bytes, static_cast<std::uint64_t>(kSize));
  EXPECT_EQ(mode_of(out->base_path), 0600u);
  EXPECT_EQ(mode_of(cache.base_dir), 0700u);
  EXPECT_EQ(mode_of(cache.instances_path), 0700u);
}

TEST(BaseCache, DiskGroupGivesThatGroupReadAndTraverseOnly) {
  const auto gid = group_id("daemon");
  if (!gid) GTEST_SKIP() << "no group 'daemon' here";
  testing::TempDir d("virtcap-group");
  const std::string src = d.write("image.raw", random_bytes(8192, 3));
  BaseCache cache(d.sub("instances"), "_base");
  cache.access.group = *gid;
  Umask strict(077);
  auto out = ensure_base_locked(cache, "img", src);
  ASSERT_TRUE(out.ok()) << out.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(out->base_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_gid, *gid);
  ASSERT_EQ(::stat(cache.base_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_gid, *gid);
}

}  // namespace
}  // namespace virtcap::imagecache
