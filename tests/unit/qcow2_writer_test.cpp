// The native qcow2 overlay writer against the reference tools: every overlay
// is checked by `qemu-img check`, compared with `qemu-img info` (and with what
// `qemu-img create` writes for the same base), compared with its base by
// `qemu-img compare`, then written and read through `qemu-io`.
#include "imagecache/qcow2_writer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "imagecache/qcow2.h"
#include "support/test_support.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr std::uint64_t kKiB = 1024, kMiB = kKiB * 1024, kGiB = kMiB * 1024;

// Runs a tool; returns "" when it exited 0, else what went wrong.
std::string run_ok(const std::vector<std::string>& argv, proc::Output* out = nullptr) {
  auto r = proc::run(argv);
  if (!r.ok()) return argv[0] + " could not run: " + r.error().message;
  if (out) *out = r.value();
  if (r->exit_code != 0)
    return argv[0] + " " + argv[1] + " exited " + std::to_string(r->exit_code) + ": " + r->err + r->out;
  return "";
}

// "" when `qemu-img check` finds nothing wrong (no errors, leaks or corruptions).
std::string qemu_check(const std::string& path) {
  proc::Output out;
  if (auto e = run_ok({"qemu-img", "check", "--output=json", path}, &out); !e.empty()) return e;
  auto j = nlohmann::json::parse(out.out);
  if (j.value("check-errors", -1) != 0 || j.value("leaks", 0) != 0 || j.value("corruptions", 0) != 0)
    return "qemu-img check of " + path + ": " + out.out;
  return "";
}

// "" when `qemu-img info` agrees with what the overlay was asked to be.
std::string qemu_info_agrees(const std::string& path, const OverlaySpec& spec) {
  proc::Output out;
  if (auto e = run_ok({"qemu-img", "info", "--force-share", "--output=json", path}, &out); !e.empty())
    return e;
  auto j = nlohmann::json::parse(out.out);
  std::string diffs;
  auto expect = [&](const char* key, const nlohmann::json& want) {
    if (j.value(key, nlohmann::json()) != want)
      diffs += std::string(" ") + key + "=" + j.value(key, nlohmann::json()).dump() + " want " + want.dump();
  };
  expect("format", "qcow2");
  expect("virtual-size", spec.virtual_size);
  expect("cluster-size", 65536);
  expect("backing-filename", spec.backing_file);
  expect("backing-filename-format", spec.backing_format);
  if (j["format-specific"]["data"].value("compat", "") != "1.1") diffs += " compat is not 1.1";
  if (j["format-specific"]["data"].value("refcount-bits", 0) != 16) diffs += " refcount-bits is not 16";
  return diffs.empty() ? "" : "qemu-img info of " + path + " disagrees:" + diffs;
}

std::string qemu_compare(const std::string& overlay, const std::string& base,
                         const std::string& base_format) {
  proc::Output out;
  if (auto e = run_ok({"qemu-img", "compare", "-f", "qcow2", "-F", base_format, overlay, base}, &out);
      !e.empty())
    return e;
  return out.out.find("Images are identical") == std::string::npos ? "qemu-img compare: " + out.out : "";
}

// Writes a 64 KiB pattern through qemu-io at `offset`, checks the image, and
// reads the pattern back.
std::string write_and_read_back(const std::string& overlay, std::uint64_t offset) {
  const std::string at = std::to_string(offset);
  if (auto e = run_ok({"qemu-io", "-f", "qcow2", "-c", "write -P 0xab " + at + " 64k", overlay}); !e.empty())
    return e;
  if (auto e = qemu_check(overlay); !e.empty()) return "after a write at " + at + ": " + e;
  if (auto e = run_ok({"qemu-io", "-f", "qcow2", "-c", "read -P 0xab " + at + " 64k", overlay}); !e.empty())
    return "read-back at " + at + ": " + e;
  return "";
}

void make_sparse(const std::string& path, std::uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0) << path;
  ::close(fd);
}

// Every check of the issue on one overlay over `base`.
void check_overlay(const std::string& base, const std::string& format, std::uint64_t resize = 0) {
  SCOPED_TRACE(base + " (" + format + ") resize " + std::to_string(resize));
  auto spec = overlay_spec_for_base(base, format, resize);
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  const std::string overlay = base + ".overlay";
  fs::remove(overlay);
  ASSERT_TRUE(create_overlay(overlay, *spec).ok());
  EXPECT_FALSE(fs::exists(overlay + ".tmp-overlay"));
  EXPECT_EQ(qemu_check(overlay), "");
  EXPECT_EQ(qemu_info_agrees(overlay, *spec), "");
  EXPECT_EQ(qemu_compare(overlay, base, format), "");

  // Differential: qemu-img create on the same base reports the same facts.
  const std::string reference = base + ".reference";
  fs::remove(reference);
  std::vector<std::string> argv{"qemu-img", "create", "-q", "-f", "qcow2",
                                "-F",       format,   "-b", base, reference};
  if (resize) argv.push_back(std::to_string(resize));
  ASSERT_EQ(run_ok(argv), "");
  auto ours = testing::qemu_img_info(overlay), theirs = testing::qemu_img_info(reference);
  for (const char* key :
       {"virtual-size", "cluster-size", "backing-filename", "backing-filename-format", "format"})
    EXPECT_EQ(ours[key], theirs[key]) << key;

  // Our own reader agrees too.
  auto h = read_header(overlay);
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->version, 3u);
  EXPECT_EQ(h->cluster_bits, 16u);
  EXPECT_EQ(h->virtual_size, spec->virtual_size);
  EXPECT_EQ(h->backing_file, base);
  EXPECT_EQ(h->backing_format, format);

  // Writes at the start and in the last cluster (the last L1 entry).
  if (spec->virtual_size >= 65536) {
    EXPECT_EQ(write_and_read_back(overlay, 0), "");
  }
  if (spec->virtual_size >= 2 * 65536) {
    EXPECT_EQ(write_and_read_back(overlay, spec->virtual_size - 65536), "");
  }
  fs::remove(overlay);
  fs::remove(reference);
}

class RawBase : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(RawBase, OverlayPassesQemuImgCheckInfoCompareAndQemuIoWrite) {
  TempDir dir("virtcap-qcow2w");
  const std::string base = dir.sub("base.raw");
  make_sparse(base, GetParam());
  check_overlay(base, "raw");
}

// Around 2^31, 2^32 and 2^40 bytes, a tiny disk, and sizes that are not whole
// sectors (rounded up to 512, as QEMU does).
INSTANTIATE_TEST_SUITE_P(Sizes, RawBase,
                         ::testing::Values(1000u, 1 * kMiB, 2 * kGiB - 512, 2 * kGiB, 2 * kGiB + 512,
                                           2 * kGiB + 1, 4 * kGiB - 512, 4 * kGiB, 4 * kGiB + 512,
                                           512 * kMiB + 512, (std::uint64_t{1} << 40) - 512,
                                           std::uint64_t{1} << 40, (std::uint64_t{1} << 40) + 512));

class Qcow2Base : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(Qcow2Base, OverlayPassesQemuImgCheckInfoCompareAndQemuIoWrite) {
  TempDir dir("virtcap-qcow2w");
  const std::string base = dir.sub("base.qcow2");
  testing::make_qcow2_image(base, std::to_string(GetParam()));
  check_overlay(base, "qcow2");
}

INSTANTIATE_TEST_SUITE_P(Sizes, Qcow2Base,
                         ::testing::Values(0u, 64 * kKiB, 2 * kGiB - 512, 2 * kGiB, 2 * kGiB + 512,
                                           4 * kGiB - 512, 4 * kGiB, 4 * kGiB + 512, std::uint64_t{1} << 40));

TEST(Qcow2Writer, ResizedOverlaysOfRawAndQcow2Bases) {
  TempDir dir("virtcap-qcow2w");
  const std::string raw = dir.sub("base.raw"), qcow2 = dir.sub("base.qcow2");
  make_sparse(raw, 1 * kMiB);
  testing::make_qcow2_image(qcow2, "3G");
  check_overlay(raw, "raw", 4 * kGiB + 512);
  check_overlay(raw, "raw", std::uint64_t{1} << 40);
  check_overlay(raw, "raw", 10 * kGiB + 100);  // rounded up to a whole sector
  check_overlay(qcow2, "qcow2", 4 * kGiB);
  check_overlay(qcow2, "qcow2", 3 * kGiB);  // the same size is allowed
}

TEST(Qcow2Writer, ReadsThroughToTheBaseUntilWritten) {
  TempDir dir("virtcap-qcow2w");
  const std::string base = dir.sub("base.raw");
  make_sparse(base, 4 * kMiB);
  ASSERT_EQ(run_ok({"qemu-io", "-f", "raw", "-c", "write -P 0xcd 1M 128k", base}), "");
  auto spec = overlay_spec_for_base(base, "raw");
  ASSERT_TRUE(spec.ok());
  const std::string overlay = dir.sub("disk");
  ASSERT_TRUE(create_overlay(overlay, *spec).ok());
  EXPECT_EQ(run_ok({"qemu-io", "-f", "qcow2", "-c", "read -P 0xcd 1M 128k", overlay}), "");
  EXPECT_EQ(run_ok({"qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", overlay}), "");
  EXPECT_EQ(run_ok({"qemu-io", "-f", "qcow2", "-c", "read -P 0xab 1M 64k", overlay}), "");
  EXPECT_EQ(run_ok({"qemu-io", "-f", "qcow2", "-c", "read -P 0xcd 1088k 64k", overlay}), "");
  EXPECT_EQ(run_ok({"qemu-io", "-f", "raw", "-c", "read -P 0xcd 1M 128k", base}), "")
      << "the base is never written";
  EXPECT_EQ(qemu_check(overlay), "");
}

// ---- the file side: temporary name, no replacing, errors change nothing ------

TEST(Qcow2Writer, NeverReplacesAnExistingFileAndLeavesNoTemporary) {
  TempDir dir("virtcap-qcow2w");
  const std::string disk = dir.write("disk", "precious");
  OverlaySpec spec{"/base", "raw", 1 * kMiB};
  auto st = create_overlay(disk, spec);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::already_exists);
  EXPECT_NE(st.error().message.find(disk), std::string::npos) << st.error().message;
  EXPECT_EQ(testing::read_file(disk), "precious");
  EXPECT_EQ(testing::tree(dir.str()), std::vector<std::string>{"disk"});
}

TEST(Qcow2Writer, AStaleTemporaryIsNotOverwrittenNorRemoved) {
  TempDir dir("virtcap-qcow2w");
  dir.write("disk.tmp-overlay", "someone else's");
  auto st = create_overlay(dir.sub("disk"), OverlaySpec{"/base", "raw", 1 * kMiB});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::io_error);
  EXPECT_EQ(testing::read_file(dir.sub("disk.tmp-overlay")), "someone else's");
  EXPECT_FALSE(fs::exists(dir.sub("disk")));
}

TEST(Qcow2Writer, AFailedWriteRemovesTheTemporary) {
  // /dev/full fails every write with ENOSPC: write_overlay_fd reports it.
  int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto img = render_overlay(OverlaySpec{"/base", "raw", 1 * kMiB});
  ASSERT_TRUE(img.ok());
  auto st = write_overlay_fd(fd, *img, "/dev/full");
  ::close(fd);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::io_error);
  EXPECT_NE(st.error().message.find("/dev/full"), std::string::npos);
  EXPECT_NE(st.error().message.find("No space"), std::string::npos) << st.error().message;
  // A directory that does not exist: nothing is created anywhere.
  TempDir dir("virtcap-qcow2w");
  auto st2 = create_overlay(dir.sub("missing/disk"), OverlaySpec{"/base", "raw", 1 * kMiB});
  ASSERT_FALSE(st2.ok());
  EXPECT_EQ(st2.error().code, Errc::io_error);
  EXPECT_TRUE(testing::tree(dir.str()).empty());
}

TEST(Qcow2Writer, WritesOnlyMetadataAndTheFileIsSparse) {
  TempDir dir("virtcap-qcow2w");
  const std::string disk = dir.sub("disk");
  ASSERT_TRUE(
      create_overlay(disk, OverlaySpec{"/base", "raw", std::uint64_t{1} << 40}, Durability::none).ok());
  struct stat st {};
  ASSERT_EQ(::stat(disk.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4 * 65536) << "header, refcount table, refcount block, one L1 cluster";
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "a guest's disk: owner only, whatever the umask";
}

// ---- fault injection: strace makes one syscall fail --------------------------

// Runs only as the child of FaultInjection below (VIRTCAP_FAULT_DIR set): one
// create_overlay() under strace's injected failure, then the checks that it
// failed cleanly, reported on stdout for the parent.
TEST(Qcow2WriterFaultChild, CreateOverlayUnderInjectedFault) {
  const char* dir = std::getenv("VIRTCAP_FAULT_DIR");
  if (!dir) GTEST_SKIP() << "run by Qcow2Writer.InjectedSyscallFailuresLeaveNothingBehind";
  const std::string disk = std::string(dir) + "/disk";
  auto st = create_overlay(disk, OverlaySpec{"/base", "raw", 1 * kMiB});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::io_error);
  EXPECT_FALSE(fs::exists(disk));
  EXPECT_FALSE(fs::exists(disk + ".tmp-overlay"));
  std::printf("FAULT-MESSAGE: %s\n", st.error().message.c_str());
}

TEST(Qcow2Writer, InjectedSyscallFailuresLeaveNothingBehind) {
  struct Case {
    const char* inject;
    const char* says;
  };
  for (const Case& c :
       {Case{"fsync:error=EIO", "cannot fsync"}, Case{"pwrite64:error=ENOSPC", "cannot write"},
        Case{"ftruncate:error=EFBIG", "cannot extend"}, Case{"close:error=EIO", "cannot close"},
        Case{"renameat2:error=EIO", "cannot rename"}}) {
    SCOPED_TRACE(c.inject);
    TempDir dir("virtcap-qcow2w-fault");
    proc::Output out;
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    // LeakSanitizer cannot run under ptrace; the rest of ASan can (ASan builds).
    const char* asan = std::getenv("ASAN_OPTIONS");
    const std::string asan_options =
        "ASAN_OPTIONS=" + std::string(asan ? asan : "") + (asan ? ":" : "") + "detect_leaks=0";
    const std::string syscall = std::string(c.inject).substr(0, std::string(c.inject).find(':'));
    // -P: only the calls on the temporary file (close, say, is everywhere).
    ASSERT_EQ(run_ok({"strace", "-f", "-o", "/dev/null", "-P", dir.sub("disk.tmp-overlay"), "-e",
                      "trace=" + syscall, "-e", std::string("inject=") + c.inject, "env",
                      "VIRTCAP_FAULT_DIR=" + dir.str(), asan_options, self,
                      "--gtest_filter=Qcow2WriterFaultChild.CreateOverlayUnderInjectedFault"},
                     &out),
              "");
    EXPECT_NE(out.out.find("[  PASSED  ] 1 test"), std::string::npos) << out.out;
    EXPECT_NE(out.out.find(std::string("FAULT-MESSAGE: ") + c.says), std::string::npos) << out.out;
    EXPECT_TRUE(testing::tree(dir.str()).empty());
  }
}

// ---- invalid input: clear errors, nothing written -----------------------------

TEST(Qcow2Writer, RejectsInvalidSpecsWithTheFieldAndLimit) {
  struct Case {
    OverlaySpec spec;
    const char* says;
  };
  const std::vector<Case> cases = {
      {{"", "raw", 512}, "1 to 1023 bytes"},
      {{std::string(1024, 'a'), "raw", 512}, "got 1024"},
      {{std::string("a\0b", 3), "raw", 512}, "NUL"},
      {{"/b", "", 512}, "backing format"},
      {{"/b", "Raw", 512}, "[a-z0-9_-]"},
      {{"/b", "qcow2 ", 512}, "[a-z0-9_-]"},
      {{"/b", std::string(16, 'r'), 512}, "1 to 15"},
      {{"/b", "raw", 1000}, "multiple of 512"},
      {{"/b", "raw", kOverlayMaxVirtualSize + 512}, "at most 2251799813685248"},
  };
  for (const auto& c : cases) {
    auto r = render_overlay(c.spec);
    ASSERT_FALSE(r.ok()) << c.says;
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
  }
  // The limits themselves are fine.
  EXPECT_TRUE(render_overlay({std::string(1023, 'a'), std::string(15, 'r'), kOverlayMaxVirtualSize}).ok());
  EXPECT_TRUE(render_overlay({"/b", "raw", 0}).ok());
  TempDir dir("virtcap-qcow2w");
  EXPECT_FALSE(create_overlay(dir.sub("disk"), {"/b", "raw", 1000}).ok());
  EXPECT_TRUE(testing::tree(dir.str()).empty());
}

TEST(Qcow2Writer, TheLargestAndSmallestOverlaysPassQemuImgCheck) {
  TempDir dir("virtcap-qcow2w");
  const std::string base = dir.sub("base.raw");
  make_sparse(base, 0);
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{512}, kOverlayMaxVirtualSize}) {
    const std::string disk = dir.sub("disk-" + std::to_string(size));
    OverlaySpec spec{base, "raw", size};
    ASSERT_TRUE(create_overlay(disk, spec).ok());
    EXPECT_EQ(qemu_check(disk), "") << size;
    EXPECT_EQ(qemu_info_agrees(disk, spec), "") << size;
  }
}

TEST(Qcow2Writer, BaseSpecFromTheDeclaredFormatNeverFromProbing) {
  TempDir dir("virtcap-qcow2w");
  // A raw image whose first bytes happen to be a qcow2 header (as a guest
  // could write): declared raw, it stays raw, sized by its length.
  const std::string q = dir.sub("looks-like-qcow2");
  testing::make_qcow2_image(q, "1T");
  auto as_raw = overlay_spec_for_base(q, "raw");
  ASSERT_TRUE(as_raw.ok());
  EXPECT_EQ(as_raw->backing_format, "raw");
  EXPECT_EQ(as_raw->virtual_size, fs::file_size(q));
  // Declared qcow2 but raw: refused, naming the file.
  const std::string raw = dir.sub("plain.raw");
  make_sparse(raw, 1 * kMiB);
  auto wrong = overlay_spec_for_base(raw, "qcow2");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, Errc::invalid_argument);
  EXPECT_NE(wrong.error().message.find(raw), std::string::npos) << wrong.error().message;
  // Other formats are for the qemu-img writer.
  auto vmdk = overlay_spec_for_base(raw, "vmdk");
  ASSERT_FALSE(vmdk.ok());
  EXPECT_NE(vmdk.error().message.find("overlay_writer"), std::string::npos) << vmdk.error().message;
  // Missing base.
  auto missing = overlay_spec_for_base(dir.sub("nope"), "raw");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::io_error);
  EXPECT_NE(missing.error().message.find("nope"), std::string::npos);
  // Shrinking is refused; growing is rounded to whole sectors.
  auto smaller = overlay_spec_for_base(raw, "raw", 512 * kKiB);
  ASSERT_FALSE(smaller.ok());
  EXPECT_NE(smaller.error().message.find("cannot shrink"), std::string::npos) << smaller.error().message;
  auto bigger = overlay_spec_for_base(raw, "raw", 2 * kMiB + 1);
  ASSERT_TRUE(bigger.ok());
  EXPECT_EQ(bigger->virtual_size, 2 * kMiB + 512);
  auto huge = overlay_spec_for_base(raw, "raw", kOverlayMaxVirtualSize + 1);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("limit"), std::string::npos);
}

TEST(Qcow2Writer, RefusesEncryptedAndUnknownFeatureQcow2Bases) {
  TempDir dir("virtcap-qcow2w");
  const std::string base = dir.sub("base.qcow2");
  auto patch_u32 = [&](std::size_t at, std::uint32_t v) {
    testing::make_qcow2_image(base, "1M");
    int fd = ::open(base.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::uint8_t b[4] = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                               static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    ASSERT_EQ(::pwrite(fd, b, 4, static_cast<off_t>(at)), 4);
    ::close(fd);
  };
  patch_u32(32, 2);  // crypt_method LUKS
  auto enc = overlay_spec_for_base(base, "qcow2");
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.error().message.find("encrypted"), std::string::npos) << enc.error().message;
  patch_u32(76, 1u << 6);  // incompatible_features bit 6 (low word at byte 76)
  auto feat = overlay_spec_for_base(base, "qcow2");
  ASSERT_FALSE(feat.ok());
  EXPECT_NE(feat.error().message.find("incompatible feature"), std::string::npos) << feat.error().message;
}

// ---- property test -----------------------------------------------------------

// A random file-name component: printable ASCII (no '/'), with some UTF-8.
std::string random_component(std::mt19937_64& rng, std::size_t len) {
  static const std::vector<std::string> kAlphabet = [] {
    std::vector<std::string> a;
    for (char c = ' '; c <= '~'; ++c)
      if (c != '/') a.emplace_back(1, c);
    for (const char* u : {"\xc3\xa9", "\xe6\xbc\xa2", "\xf0\x9f\x92\xbe"}) a.emplace_back(u);
    return a;
  }();
  std::string s;
  while (s.size() < len) {
    const std::string& unit = kAlphabet[rng() % kAlphabet.size()];
    s += s.size() + unit.size() <= len ? unit : std::string("x");
  }
  if (s == "." || s == "..") s = "x";
  return s;
}

struct Sample {
  std::string name;          // as stored in the header
  std::string base_on_disk;  // where the base file really is
  std::uint64_t base_size = 0;
  std::uint64_t virtual_size = 0;
};

// A backing name of 1..1023 bytes: absolute, or relative to the overlay's
// directory ("./" first, so a ':' never reads as a protocol); deep enough that
// no component exceeds NAME_MAX.
Sample random_sample(std::mt19937_64& rng, const std::string& root, int i) {
  Sample s;
  const bool absolute = rng() % 2;
  const std::string prefix = absolute ? root + "/" : "./";
  const std::string own = "b" + std::to_string(i) + "-" + std::to_string(rng() % 1000);
  const std::size_t budget = 1023 - prefix.size() - own.size();
  std::size_t want = rng() % (budget + 1);
  if (rng() % 8 == 0) want = budget;  // often at the limit
  std::string rel;
  while (rel.size() + 2 <= want) {  // a component of >= 1 byte and its '/'
    const std::size_t left = want - rel.size() - 1;
    rel += random_component(rng, std::min<std::size_t>(1 + rng() % 200, left)) + "/";
  }
  rel += own;
  s.name = prefix + rel;
  s.base_on_disk = root + "/" + rel;
  // Overlay sizes log-uniform over 2^0 .. 2^51 bytes in whole sectors; the raw
  // base is the same size or smaller (a resized overlay), at most 2^40 bytes
  // (ext4 caps files at 16 TiB).
  const int bits = static_cast<int>(rng() % 52);
  const std::uint64_t raw =
      bits == 0 ? 0 : (std::uint64_t{1} << (bits - 1)) + rng() % (std::uint64_t{1} << (bits - 1));
  s.virtual_size = std::min((raw + 511) / 512 * 512, kOverlayMaxVirtualSize);
  s.base_size = rng() % 3 == 0 ? rng() % (std::min(s.virtual_size, std::uint64_t{1} << 40) + 1)
                               : std::min(s.virtual_size, std::uint64_t{1} << 40);
  return s;
}

TEST(Qcow2WriterProperty, RandomOverlaysPassQemuImgCheckAndInfo) {
  const char* env = std::getenv("VIRTCAP_SEED");
  const std::uint64_t seed = env ? std::stoull(env) : std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with VIRTCAP_SEED=" + std::to_string(seed) + ")");
  constexpr int kCount = 200;
  TempDir dir("virtcap-qcow2w-prop");
  std::vector<Sample> samples;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < kCount; ++i) samples.push_back(random_sample(rng, dir.str(), i));

  std::mutex mu;
  std::vector<std::string> failures;
  auto worker = [&](int first, int step) {
    for (int i = first; i < kCount; i += step) {
      const Sample& s = samples[static_cast<std::size_t>(i)];
      std::string why;
      std::error_code ec;
      fs::create_directories(fs::path(s.base_on_disk).parent_path(), ec);
      const int fd = ::open(s.base_on_disk.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(s.base_size)) != 0) why = "cannot make base";
      if (fd >= 0) ::close(fd);
      const std::string overlay = dir.sub("overlay-" + std::to_string(i));
      const OverlaySpec spec{s.name, "raw", s.virtual_size};
      if (why.empty()) {
        auto st = create_overlay(overlay, spec);
        if (!st.ok()) why = st.error().message;
      }
      if (why.empty()) why = qemu_check(overlay);
      if (why.empty()) why = qemu_info_agrees(overlay, spec);
      if (!why.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back("#" + std::to_string(i) + " size " + std::to_string(s.virtual_size) + " name '" +
                           s.name + "': " + why);
      }
    }
  };
  std::thread a(worker, 0, 2), b(worker, 1, 2);
  a.join();
  b.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << kCount
                                << " overlays failed; first: " << failures[0];
}

}  // namespace
}  // namespace virtcap::imagecache
