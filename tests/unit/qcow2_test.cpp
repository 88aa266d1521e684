// The native qcow2 header reader against the real qemu-img: images are made
// by qemu-img in a temp dir, read by us, and compared with
// `qemu-img info --output=json`. Malformed images are made by patching bytes.
#include "imagecache/qcow2.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace virtcap::imagecache {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

constexpr std::uint64_t kBackingOffsetField = 8;
constexpr std::uint64_t kBackingSizeField = 16;
constexpr std::uint32_t kBackingFormatExt = 0xE2792ACA;

// ---- byte helpers -------------------------------------------------------------

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void put_be(Bytes& b, std::size_t at, std::uint64_t value, int width) {
  if (b.size() < at + width) b.resize(at + width, 0);
  for (int i = 0; i < width; ++i) b[at + i] = static_cast<std::uint8_t>(value >> (8 * (width - 1 - i)));
}
void put_be32(Bytes& b, std::size_t at, std::uint32_t v) { put_be(b, at, v, 4); }
void put_be64(Bytes& b, std::size_t at, std::uint64_t v) { put_be(b, at, v, 8); }
std::uint32_t get_be32(const Bytes& b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) | (std::uint32_t{b[at + 2]} << 8) |
         b[at + 3];
}
std::uint64_t get_be64(const Bytes& b, std::size_t at) {
  return (std::uint64_t{get_be32(b, at)} << 32) | get_be32(b, at + 4);
}
void put_text(Bytes& b, std::size_t at, const std::string& s) {
  if (b.size() < at + s.size()) b.resize(at + s.size(), 0);
  std::copy(s.begin(), s.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
}

// Offset of the header extension of `type`, searched in the first cluster.
std::size_t find_extension(const Bytes& b, std::uint32_t type) {
  for (std::size_t i = 72; i + 8 <= std::min<std::size_t>(b.size(), 65536); i += 8) {
    if (get_be32(b, i) == type) return i;
  }
  return 0;
}

// Patches a file in place through `edit`.
template <class F>
void patch(const std::string& path, F edit) {
  Bytes b = read_all(path);
  ASSERT_FALSE(b.empty()) << path;
  edit(b);
  write_all(path, b);
}

// A synthetic header: v3 with 64 KiB clusters, 104-byte header, no extensions.
Bytes synthetic_v3(std::size_t size = 512) {
  Bytes b(size, 0);
  put_text(b, 0, "QFI\xfb");
  put_be32(b, 4, 3);
  put_be32(b, 20, 16);
  put_be64(b, 24, 1 << 20);
  put_be32(b, 96, 4);
  put_be32(b, 100, 104);
  return b;
}

Qcow2Errc parse_error(const Bytes& b, std::uint64_t file_size) {
  auto r = parse_header(b, file_size);
  EXPECT_FALSE(r.ok());
  return r.ok() ? Qcow2Errc::io_error : r.error().code;
}

// ---- fixture ------------------------------------------------------------------

class Qcow2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/virtcap-qcow2-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string p(const std::string& name) const { return dir_ + "/" + name; }

  void qemu_img(std::vector<std::string> args) {
    args.insert(args.begin(), "qemu-img");
    auto r = proc::run(args);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    ASSERT_EQ(r->exit_code, 0) << r->err;
  }

  void info(const std::string& path, nlohmann::json& out, bool chain = false) {
    std::vector<std::string> args{"qemu-img", "info", "--output=json"};
    if (chain) args.push_back("--backing-chain");
    args.push_back(path);
    auto r = proc::run(args);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    ASSERT_EQ(r->exit_code, 0) << r->err;
    out = nlohmann::json::parse(r->out);
  }

  void make_raw(const std::string& name, const std::string& size = "1M") {
    qemu_img({"create", "-f", "raw", p(name), size});
  }

  // Reads `path` with us and with qemu-img and compares what both report.
  void expect_matches_qemu(const std::string& path) {
    nlohmann::json j;
    ASSERT_NO_FATAL_FAILURE(info(path, j));
    auto h = read_header(path);
    ASSERT_TRUE(h.ok()) << h.error().describe();
    EXPECT_EQ(j.at("format"), "qcow2");
    EXPECT_EQ(h->virtual_size, j.at("virtual-size").get<std::uint64_t>()) << path;
    EXPECT_EQ(h->cluster_size(), j.at("cluster-size").get<std::uint64_t>()) << path;
    EXPECT_EQ(h->version == 2 ? "0.10" : "1.1", j.at("format-specific").at("data").at("compat")) << path;
    EXPECT_FALSE(h->backing_name_pending());
    if (j.contains("backing-filename")) {
      EXPECT_TRUE(h->has_backing());
      EXPECT_EQ(h->backing_file, j.at("backing-filename").get<std::string>()) << path;
      const std::string full = j.at("full-backing-filename").get<std::string>();
      if (h->backing_is_path) {
        EXPECT_EQ(resolve_backing(path, h->backing_file), fs::path(full).lexically_normal().string()) << path;
      } else {
        EXPECT_EQ(resolve_backing(path, h->backing_file), full) << path;
      }
    } else {
      EXPECT_FALSE(h->has_backing()) << path;
      EXPECT_TRUE(h->backing_file.empty()) << path;
    }
    if (j.contains("backing-filename-format")) {
      EXPECT_EQ(h->backing_format, j.at("backing-filename-format").get<std::string>()) << path;
    } else {
      EXPECT_TRUE(h->backing_format.empty()) << path;
    }
  }

  // base.raw <- mid.qcow2 (v2, relative, -F raw) <- top.qcow2 (v3, absolute, -F qcow2)
  void make_chain_of_three() {
    make_raw("base.raw", "4M");
    qemu_img({"create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", p("mid.qcow2")});
    qemu_img({"create", "-f", "qcow2", "-o", "compat=1.1", "-b", p("mid.qcow2"), "-F", "qcow2",
              p("top.qcow2"), "8M"});
  }

  Qcow2Errc read_error(const std::string& path) {
    auto r = read_header(path);
    EXPECT_FALSE(r.ok()) << path;
    if (r.ok()) return Qcow2Errc::io_error;
    EXPECT_EQ(r.error().path, path);
    return r.error().code;
  }

  std::string dir_;
};

// ---- agreement with qemu-img ------------------------------------------------------

TEST_F(Qcow2Test, V2WithoutBackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-o", "compat=0.10", p("v2.qcow2"), "10M"}));
  expect_matches_qemu(p("v2.qcow2"));
  auto h = read_header(p("v2.qcow2"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, 2u);
  EXPECT_EQ(h->header_length, 72u);
  EXPECT_FALSE(h->backing_is_path);
}

TEST_F(Qcow2Test, V3WithoutBackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-o", "compat=1.1", p("v3.qcow2"), "16T"}));
  expect_matches_qemu(p("v3.qcow2"));
  auto h = read_header(p("v3.qcow2"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, 3u);
  EXPECT_EQ(h->virtual_size, std::uint64_t{16} << 40);
  EXPECT_GE(h->header_length, 104u);
}

TEST_F(Qcow2Test, V2RelativeRawBackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  expect_matches_qemu(p("ov.qcow2"));
  auto h = read_header(p("ov.qcow2"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->backing_file, "base.raw");
  EXPECT_EQ(h->backing_format, "raw");
  EXPECT_TRUE(h->backing_is_path);
  EXPECT_EQ(resolve_backing(p("ov.qcow2"), h->backing_file), p("base.raw"));
}

TEST_F(Qcow2Test, V3RelativeRawBackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-o", "compat=1.1", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  expect_matches_qemu(p("ov.qcow2"));
}

TEST_F(Qcow2Test, V2AbsoluteQcow2BackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("base.qcow2"), "2M"}));
  ASSERT_NO_FATAL_FAILURE(qemu_img(
      {"create", "-f", "qcow2", "-o", "compat=0.10", "-b", p("base.qcow2"), "-F", "qcow2", p("ov.qcow2")}));
  expect_matches_qemu(p("ov.qcow2"));
  auto h = read_header(p("ov.qcow2"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->backing_file, p("base.qcow2"));
  EXPECT_EQ(h->backing_format, "qcow2");
}

TEST_F(Qcow2Test, V3AbsoluteQcow2BackingMatchesQemuImg) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("base.qcow2"), "2M"}));
  ASSERT_NO_FATAL_FAILURE(qemu_img(
      {"create", "-f", "qcow2", "-o", "compat=1.1", "-b", p("base.qcow2"), "-F", "qcow2", p("ov.qcow2")}));
  expect_matches_qemu(p("ov.qcow2"));
}

TEST_F(Qcow2Test, BackingInParentDirectoryResolvesAgainstTheImagesDirectory) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  fs::create_directory(p("sub"));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-b", "../base.raw", "-F", "raw", p("sub/ov.qcow2")}));
  expect_matches_qemu(p("sub/ov.qcow2"));
  auto h = read_header(p("sub/ov.qcow2"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->backing_file, "../base.raw");
  EXPECT_EQ(resolve_backing(p("sub/ov.qcow2"), h->backing_file), p("base.raw"));
}

TEST_F(Qcow2Test, SmallestAndLargestClusterSizesMatchQemuImg) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  for (const std::string cluster : {"512", "2M"}) {
    const std::string img = p("c" + cluster + ".qcow2");
    ASSERT_NO_FATAL_FAILURE(qemu_img(
        {"create", "-f", "qcow2", "-o", "cluster_size=" + cluster, "-b", "base.raw", "-F", "raw", img}));
    expect_matches_qemu(img);
  }
}

TEST_F(Qcow2Test, ChainOfThreeMatchesQemuImgBackingChain) {
  ASSERT_NO_FATAL_FAILURE(make_chain_of_three());
  expect_matches_qemu(p("top.qcow2"));
  expect_matches_qemu(p("mid.qcow2"));

  auto chain = backing_chain(p("top.qcow2"));
  ASSERT_TRUE(chain.ok()) << chain.error().describe();
  nlohmann::json j;
  ASSERT_NO_FATAL_FAILURE(info(p("top.qcow2"), j, /*chain=*/true));
  ASSERT_EQ(chain->size(), j.size());
  ASSERT_EQ(chain->size(), 3u);
  for (std::size_t i = 0; i < chain->size(); ++i) {
    EXPECT_EQ((*chain)[i].path, fs::path(j[i].at("filename").get<std::string>()).lexically_normal().string());
    EXPECT_EQ((*chain)[i].format, j[i].at("format").get<std::string>());
    EXPECT_TRUE((*chain)[i].is_file);
  }
  EXPECT_EQ((*chain)[0].path, p("top.qcow2"));
  EXPECT_EQ((*chain)[1].path, p("mid.qcow2"));
  EXPECT_EQ((*chain)[2].path, p("base.raw"));
  EXPECT_EQ((*chain)[2].format, "raw");
}

TEST_F(Qcow2Test, ChainOfARawFileIsJustThatFile) {
  ASSERT_NO_FATAL_FAILURE(make_raw("disk.raw"));
  auto chain = backing_chain(p("disk.raw"));
  ASSERT_TRUE(chain.ok()) << chain.error().describe();
  ASSERT_EQ(chain->size(), 1u);
  EXPECT_EQ((*chain)[0].path, p("disk.raw"));
  EXPECT_EQ((*chain)[0].format, "raw");
}

TEST_F(Qcow2Test, BackingDeclaredRawIsReportedNotOpened) {
  // The backing is really a qcow2 file and, separately, a missing file: with
  // -F raw neither is opened, both are reported as raw.
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("inner.qcow2"), "1M"}));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-b", "inner.qcow2", "-F", "raw", p("a.qcow2")}));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-u", "-b", "gone.raw", "-F", "raw", p("b.qcow2"), "1M"}));

  auto a = backing_chain(p("a.qcow2"));
  ASSERT_TRUE(a.ok()) << a.error().describe();
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[1].path, p("inner.qcow2"));
  EXPECT_EQ((*a)[1].format, "raw");

  auto b = backing_chain(p("b.qcow2"));
  ASSERT_TRUE(b.ok()) << b.error().describe();
  ASSERT_EQ(b->size(), 2u);
  EXPECT_EQ((*b)[1].path, p("gone.raw"));
  EXPECT_EQ((*b)[1].format, "raw");
}

TEST_F(Qcow2Test, UndeclaredBackingFormatIsProbedByMagic) {
  ASSERT_NO_FATAL_FAILURE(make_chain_of_three());
  // Rename the backing-format extensions to an unknown type: the reader must
  // skip them, report no declared format, and probe the backing files.
  for (const char* name : {"top.qcow2", "mid.qcow2"}) {
    ASSERT_NO_FATAL_FAILURE(patch(p(name), [](Bytes& b) {
      const std::size_t ext = find_extension(b, kBackingFormatExt);
      ASSERT_NE(ext, 0u);
      put_be32(b, ext, 0x12345678);
    }));
    auto h = read_header(p(name));
    ASSERT_TRUE(h.ok()) << h.error().describe();
    EXPECT_TRUE(h->backing_format.empty());
    EXPECT_TRUE(h->has_backing());
  }
  auto chain = backing_chain(p("top.qcow2"));
  ASSERT_TRUE(chain.ok()) << chain.error().describe();
  ASSERT_EQ(chain->size(), 3u);
  EXPECT_EQ((*chain)[1].format, "qcow2");
  EXPECT_EQ((*chain)[2].format, "raw");
  EXPECT_EQ((*chain)[2].path, p("base.raw"));
}

TEST_F(Qcow2Test, ProtocolBackingIsFlaggedNotResolvedAndEndsTheChain) {
  ASSERT_NO_FATAL_FAILURE(qemu_img(
      {"create", "-f", "qcow2", "-u", "-b", "nbd:localhost:10809", "-F", "raw", p("nbd.qcow2"), "1M"}));
  const std::string json_name = R"(json:{"file": {"driver": "file", "filename": "/x/y.raw"}})";
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-u", "-b", json_name, "-F", "raw", p("json.qcow2"), "1M"}));
  expect_matches_qemu(p("nbd.qcow2"));
  expect_matches_qemu(p("json.qcow2"));

  auto h = read_header(p("json.qcow2"));
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->backing_file, json_name);
  EXPECT_FALSE(h->backing_is_path);
  EXPECT_EQ(resolve_backing(p("json.qcow2"), h->backing_file), json_name);

  auto chain = backing_chain(p("nbd.qcow2"));
  ASSERT_TRUE(chain.ok()) << chain.error().describe();
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ((*chain)[1].path, "nbd:localhost:10809");
  EXPECT_EQ((*chain)[1].format, "raw");
  EXPECT_FALSE((*chain)[1].is_file);
}

TEST_F(Qcow2Test, BackingNameBeyondTheFirstReadIsFetchedWithASecondRead) {
  // QEMU wants the name inside the first cluster: with 2 MiB clusters that
  // leaves room to move it past the first 64 KiB read.
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img(
      {"create", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  const std::string name = "../" + fs::path(dir_).filename().string() + "/base.raw";
  const std::size_t far = kQcow2HeadRead + 1000;
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [&](Bytes& b) {
    ASSERT_GT(b.size(), far + name.size());
    ASSERT_EQ(b[far], 0);  // unused space in the first cluster
    put_text(b, far, name);
    put_be64(b, kBackingOffsetField, far);
    put_be32(b, kBackingSizeField, static_cast<std::uint32_t>(name.size()));
  }));
  expect_matches_qemu(p("ov.qcow2"));
  auto h = read_header(p("ov.qcow2"));
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->backing_file, name);
  EXPECT_EQ(resolve_backing(p("ov.qcow2"), h->backing_file), p("base.raw"));

  // The pure parser, given only the head, asks for the name instead.
  const Bytes all = read_all(p("ov.qcow2"));
  const Bytes head(all.begin(), all.begin() + kQcow2HeadRead);
  auto partial = parse_header(head, all.size());
  ASSERT_TRUE(partial.ok()) << partial.error().describe();
  EXPECT_TRUE(partial->backing_name_pending());
  EXPECT_EQ(partial->needed_bytes, far + name.size());
  EXPECT_TRUE(partial->backing_file.empty());
  ASSERT_TRUE(complete_backing_name(*partial, std::span(all).subspan(far, name.size())).ok());
  EXPECT_FALSE(partial->backing_name_pending());
  EXPECT_EQ(partial->backing_file, name);
  EXPECT_TRUE(partial->backing_is_path);
}

TEST_F(Qcow2Test, HeaderAreaLongerThanAPageIsReadInFull) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  // Rewrite the extensions: a 6000-byte unknown one, then the backing
  // format, then the end; the name after them at 8192, all past the first 4 KiB.
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [](Bytes& b) {
    const std::size_t start = get_be32(b, 100);  // header_length
    std::fill(b.begin() + static_cast<std::ptrdiff_t>(start), b.begin() + 65536, 0);
    put_be32(b, start, 0x0badcafe);
    put_be32(b, start + 4, 6000);
    const std::size_t fmt = start + 8 + 6000;
    put_be32(b, fmt, kBackingFormatExt);
    put_be32(b, fmt + 4, 3);
    put_text(b, fmt + 8, "raw");
    put_text(b, 8192, "base.raw");
    put_be64(b, kBackingOffsetField, 8192);
    put_be32(b, kBackingSizeField, 8);
  }));
  expect_matches_qemu(p("ov.qcow2"));
  auto h = read_header(p("ov.qcow2"));
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->backing_file, "base.raw");
  EXPECT_EQ(h->backing_format, "raw");
}

TEST_F(Qcow2Test, ReadHeaderFdLeavesTheCallersFdOpen) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  const int fd = ::open(p("ov.qcow2").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::lseek(fd, 100, SEEK_SET), 100);
  for (int i = 0; i < 2; ++i) {
    auto h = read_header_fd(fd, "label");
    ASSERT_TRUE(h.ok()) << h.error().describe();
    EXPECT_EQ(h->backing_file, "base.raw");
  }
  EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 100);  // pread only: the offset did not move
  EXPECT_EQ(::close(fd), 0);                 // still ours to close
  auto bad = read_header_fd(fd, "label");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Qcow2Errc::io_error);
  EXPECT_EQ(bad.error().sys_errno, EBADF);
  EXPECT_EQ(bad.error().path, "label");
}

TEST_F(Qcow2Test, SymlinkedDiskIsFollowed) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("real.qcow2"), "3M"}));
  fs::create_symlink(p("real.qcow2"), p("link.qcow2"));
  auto h = read_header(p("link.qcow2"));
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->virtual_size, 3u << 20);
}

// ---- malformed images -------------------------------------------------------------

TEST_F(Qcow2Test, RawFileIsNotQcow2) {
  ASSERT_NO_FATAL_FAILURE(write_all(p("disk.raw"), Bytes(4096, 0xab)));
  EXPECT_EQ(read_error(p("disk.raw")), Qcow2Errc::not_qcow2);
  EXPECT_FALSE(has_qcow2_magic(read_all(p("disk.raw"))));
  ASSERT_NO_FATAL_FAILURE(write_all(p("empty"), Bytes{}));
  EXPECT_EQ(read_error(p("empty")), Qcow2Errc::not_qcow2);
}

TEST_F(Qcow2Test, TruncatedHeaderIsTruncated) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("full.qcow2"), "1M"}));
  const Bytes all = read_all(p("full.qcow2"));
  EXPECT_TRUE(has_qcow2_magic(all));
  for (std::size_t n : {2u, 6u, 50u, 100u}) {
    const Bytes head(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n));
    ASSERT_NO_FATAL_FAILURE(write_all(p("cut.qcow2"), head));
    EXPECT_EQ(read_error(p("cut.qcow2")), Qcow2Errc::truncated) << n;
    EXPECT_EQ(parse_error(head, n), Qcow2Errc::truncated) << n;
    // A short buffer from a longer file is truncated too.
    EXPECT_EQ(parse_error(head, all.size()), Qcow2Errc::truncated) << n;
  }
}

TEST_F(Qcow2Test, BackingOffsetPastEndOfFile) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  const std::uint64_t size = fs::file_size(p("ov.qcow2"));
  // Past the end (found by the second read), straddling the end, and an
  // offset that would wrap around if added carelessly.
  for (std::uint64_t offset : {size + 100, size - 4, ~std::uint64_t{0} - 3, std::uint64_t{1} << 63}) {
    ASSERT_NO_FATAL_FAILURE(
        patch(p("ov.qcow2"), [&](Bytes& b) { put_be64(b, kBackingOffsetField, offset); }));
    EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::offset_past_eof) << offset;
    const Bytes all = read_all(p("ov.qcow2"));
    EXPECT_EQ(parse_error(all, all.size()), Qcow2Errc::offset_past_eof) << offset;
  }
  // Within a short file's own bytes: the pure parser catches it.
  Bytes b = synthetic_v3(600);
  put_be64(b, kBackingOffsetField, 590);
  put_be32(b, kBackingSizeField, 20);
  EXPECT_EQ(parse_error(b, b.size()), Qcow2Errc::offset_past_eof);
  // Not knowing the file size, the parser asks for the name; only 10 bytes exist.
  auto pending = parse_header(b, kQcow2UnknownFileSize);
  ASSERT_TRUE(pending.ok()) << pending.error().describe();
  ASSERT_EQ(pending->needed_bytes, 610u);
  auto done = complete_backing_name(*pending, std::span(b).subspan(590));
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.error().code, Qcow2Errc::offset_past_eof);
}

TEST_F(Qcow2Test, OversizedBackingNameIsTooLong) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [](Bytes& b) { put_be32(b, kBackingSizeField, 5000); }));
  EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::name_too_long);
  // 1023 bytes is the limit, and is accepted.
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [](Bytes& b) {
    put_be64(b, kBackingOffsetField, 4096);
    put_be32(b, kBackingSizeField, kQcow2MaxBackingName);
    put_text(b, 4096, std::string(kQcow2MaxBackingName, 'n'));
  }));
  auto h = read_header(p("ov.qcow2"));
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->backing_file.size(), kQcow2MaxBackingName);
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [](Bytes& b) { put_be32(b, kBackingSizeField, 1024); }));
  EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::name_too_long);
}

TEST_F(Qcow2Test, NulInsideBackingName) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  // In the first read...
  ASSERT_NO_FATAL_FAILURE(
      patch(p("ov.qcow2"), [](Bytes& b) { b[get_be64(b, kBackingOffsetField) + 2] = 0; }));
  EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::nul_in_name);
  // ...and in a name fetched by the second read.
  ASSERT_NO_FATAL_FAILURE(patch(p("ov.qcow2"), [](Bytes& b) {
    const std::size_t far = b.size() + 8;
    put_text(b, far, std::string("base\0raw", 8));
    put_be64(b, kBackingOffsetField, far);
  }));
  EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::nul_in_name);
}

TEST_F(Qcow2Test, UnsupportedVersion) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("img.qcow2"), "1M"}));
  for (std::uint8_t version : {7, 1, 0}) {
    ASSERT_NO_FATAL_FAILURE(patch(p("img.qcow2"), [&](Bytes& b) { b[7] = version; }));
    EXPECT_EQ(read_error(p("img.qcow2")), Qcow2Errc::unsupported_version) << int{version};
  }
  // A cluster size qcow2 does not allow is unsupported too.
  Bytes b = synthetic_v3();
  put_be32(b, 20, 40);
  EXPECT_EQ(parse_error(b, b.size()), Qcow2Errc::unsupported_version);
}

TEST_F(Qcow2Test, ExtensionRunningPastItsAreaIsBadExtension) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  // With a backing file the extensions must end where the name starts...
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("ov.qcow2")}));
  ASSERT_NO_FATAL_FAILURE(patch(
      p("ov.qcow2"), [](Bytes& b) { put_be32(b, find_extension(b, kBackingFormatExt) + 4, 0x00100000); }));
  EXPECT_EQ(read_error(p("ov.qcow2")), Qcow2Errc::bad_extension);
  // ...without one, at the end of the first cluster.
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("plain.qcow2"), "1M"}));
  ASSERT_NO_FATAL_FAILURE(patch(p("plain.qcow2"), [](Bytes& b) {
    const std::uint32_t first_extension = get_be32(b, 100);  // header_length
    ASSERT_NE(get_be32(b, first_extension), 0u);
    put_be32(b, first_extension + 4, 0xfffffff0);
  }));
  EXPECT_EQ(read_error(p("plain.qcow2")), Qcow2Errc::bad_extension);
  // A backing format too long to be one.
  Bytes s = synthetic_v3();
  put_be32(s, 104, kBackingFormatExt);
  put_be32(s, 108, 20);
  EXPECT_EQ(parse_error(s, s.size()), Qcow2Errc::bad_extension);
  // header_length beyond the cluster.
  Bytes l = synthetic_v3();
  put_be32(l, 100, 70000);
  EXPECT_EQ(parse_error(l, kQcow2UnknownFileSize), Qcow2Errc::bad_extension);
}

TEST_F(Qcow2Test, ExtensionsBeyondTheSuppliedBytesAreTruncated) {
  Bytes b = synthetic_v3(4096);
  put_be32(b, 104, 0x12345678);  // an unknown extension of 1000 bytes
  put_be32(b, 108, 1000);
  auto ok = parse_header(b, b.size());
  ASSERT_TRUE(ok.ok()) << ok.error().describe();
  const Bytes head(b.begin(), b.begin() + 600);
  EXPECT_EQ(parse_error(head, b.size()), Qcow2Errc::truncated);
  EXPECT_EQ(parse_error(head, head.size()), Qcow2Errc::truncated);
}

TEST_F(Qcow2Test, ChainLoopIsDetected) {
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("b.qcow2"), "1M"}));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", p("a.qcow2")}));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", p("b.qcow2")}));
  auto r = backing_chain(p("a.qcow2"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Qcow2Errc::chain_loop);
  EXPECT_EQ(r.error().path, p("a.qcow2"));
  EXPECT_NE(r.error().describe().find(p("b.qcow2")), std::string::npos) << r.error().describe();

  // An image backed by itself, spelt differently ("./"), is a loop too.
  ASSERT_NO_FATAL_FAILURE(qemu_img({"create", "-f", "qcow2", p("self.qcow2"), "1M"}));
  ASSERT_NO_FATAL_FAILURE(qemu_img({"rebase", "-u", "-b", "./self.qcow2", "-F", "qcow2", p("self.qcow2")}));
  auto s = backing_chain(p("self.qcow2"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Qcow2Errc::chain_loop);
}

TEST_F(Qcow2Test, ChainTooDeep) {
  ASSERT_NO_FATAL_FAILURE(make_chain_of_three());
  auto r = backing_chain(p("top.qcow2"), 2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Qcow2Errc::chain_too_deep);
  EXPECT_EQ(r.error().path, p("top.qcow2"));
  auto exact = backing_chain(p("top.qcow2"), 3);
  ASSERT_TRUE(exact.ok()) << exact.error().describe();
  EXPECT_EQ(exact->size(), 3u);
}

TEST_F(Qcow2Test, MissingOrUnreadableFileIsIoError) {
  auto missing = read_header(p("nope.qcow2"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Qcow2Errc::io_error);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
  EXPECT_EQ(missing.error().path, p("nope.qcow2"));

  auto dir = read_header(dir_);
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().code, Qcow2Errc::io_error);
  EXPECT_EQ(dir.error().sys_errno, EISDIR);

  // A missing backing file (declared qcow2, so it must be opened) names both files.
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", p("ov.qcow2"), "1M"}));
  auto chain = backing_chain(p("ov.qcow2"));
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.error().code, Qcow2Errc::io_error);
  EXPECT_EQ(chain.error().path, p("gone.qcow2"));
  EXPECT_NE(chain.error().describe().find(p("ov.qcow2")), std::string::npos) << chain.error().describe();
}

TEST_F(Qcow2Test, BackingDeclaredQcow2ButRawIsNotQcow2) {
  ASSERT_NO_FATAL_FAILURE(make_raw("base.raw"));
  ASSERT_NO_FATAL_FAILURE(
      qemu_img({"create", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "qcow2", p("ov.qcow2"), "1M"}));
  auto chain = backing_chain(p("ov.qcow2"));
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.error().code, Qcow2Errc::not_qcow2);
  EXPECT_EQ(chain.error().path, p("base.raw"));
}

// ---- pure functions ---------------------------------------------------------------

TEST(Qcow2Resolve, AbsoluteIsNormalisedRelativeIsAgainstTheDisksDirectory) {
  EXPECT_EQ(resolve_backing("/var/lib/disk", "/images/./a/../base.raw"), "/images/base.raw");
  EXPECT_EQ(resolve_backing("/var/lib/x/disk", "base.raw"), "/var/lib/x/base.raw");
  EXPECT_EQ(resolve_backing("/var/lib/x/disk", "../_base/b"), "/var/lib/_base/b");
  EXPECT_EQ(resolve_backing("/var/lib/x/disk", "./sub//b"), "/var/lib/x/sub/b");
  EXPECT_EQ(resolve_backing("rel/dir/disk", "b"), "rel/dir/b");
  EXPECT_EQ(resolve_backing("disk", "b"), "b");
  EXPECT_EQ(resolve_backing("/var/lib/x/disk", ""), "");
}

TEST(Qcow2Resolve, ProtocolNamesAreUnchanged) {
  for (const char* name : {"nbd:localhost:10809", "json:{\"a\": \"/b\"}", "file:base.raw", "rbd:pool/image",
                           "http://example.com/a.img"}) {
    EXPECT_TRUE(backing_has_protocol(name)) << name;
    EXPECT_EQ(resolve_backing("/var/lib/x/disk", name), name);
  }
  EXPECT_FALSE(backing_has_protocol("dir/with:colon"));
  EXPECT_FALSE(backing_has_protocol("/abs/a:b"));
  EXPECT_FALSE(backing_has_protocol("plain"));
}

TEST(Qcow2Parse, SyntheticHeaderFieldsAreRead) {
  Bytes b = synthetic_v3(4096);
  put_be64(b, 72, 0x1);   // dirty
  put_be64(b, 80, 0x1);   // lazy refcounts
  put_be32(b, 100, 112);  // header with a compression type byte
  b[104] = 1;             // zstd
  put_be32(b, 112, kBackingFormatExt);
  put_be32(b, 116, 5);
  put_text(b, 120, "qcow2");
  put_be64(b, kBackingOffsetField, 1000);
  put_be32(b, kBackingSizeField, 8);
  put_text(b, 1000, "base.img");
  auto h = parse_header(b, b.size());
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->version, 3u);
  EXPECT_EQ(h->cluster_size(), 65536u);
  EXPECT_EQ(h->virtual_size, 1u << 20);
  EXPECT_EQ(h->incompatible_features, 1u);
  EXPECT_EQ(h->compatible_features, 1u);
  EXPECT_EQ(h->header_length, 112u);
  EXPECT_EQ(h->compression_type, 1u);
  EXPECT_EQ(h->backing_format, "qcow2");
  EXPECT_EQ(h->backing_file, "base.img");
  EXPECT_TRUE(h->backing_is_path);
  EXPECT_FALSE(h->backing_name_pending());
}

TEST(Qcow2Parse, ShortOrForeignBuffers) {
  EXPECT_EQ(parse_error(Bytes{}, 0), Qcow2Errc::not_qcow2);
  EXPECT_EQ(parse_error(Bytes{'Q', 'F'}, 2), Qcow2Errc::truncated);
  EXPECT_EQ(parse_error(Bytes{'Q', 'X'}, 2), Qcow2Errc::not_qcow2);
  EXPECT_EQ(parse_error(Bytes{0x7f, 'E', 'L', 'F', 2, 1, 1, 0}, 8), Qcow2Errc::not_qcow2);
  Bytes header_length_too_small = synthetic_v3();
  put_be32(header_length_too_small, 100, 50);
  EXPECT_EQ(parse_error(header_length_too_small, 512), Qcow2Errc::truncated);
  EXPECT_TRUE(has_qcow2_magic(synthetic_v3()));
  EXPECT_FALSE(has_qcow2_magic(Bytes{'Q', 'F', 'I'}));
}

TEST(Qcow2Describe, DescribeIsOneSentenceNamingTheFile) {
  Qcow2Error e;
  e.code = Qcow2Errc::nul_in_name;
  e.path = "/var/lib/virtcap/instances/x/disk";
  e.detail = "at byte 2 of 8";
  EXPECT_EQ(e.describe(),
            "'/var/lib/virtcap/instances/x/disk' has a NUL byte inside its qcow2 backing file name: at byte "
            "2 of 8.");
  e.code = Qcow2Errc::chain_loop;
  e.detail.clear();
  EXPECT_EQ(e.describe(), "'/var/lib/virtcap/instances/x/disk' has a backing chain that loops.");
  EXPECT_EQ(to_string(Qcow2Errc::bad_extension), "bad_extension");
}

}  // namespace
}  // namespace virtcap::imagecache
