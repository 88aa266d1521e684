#include "virt/libvirt/image_repo.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/fd.h"
#include "imagecache/image_probe.h"
#include "imagecache/qcow2.h"

namespace virtcap::libvirt {

Result<ImageInfo> ImageRepository::find(std::string_view id) const {
  if (!valid_image_id(id))
    return invalid_argument_error(
        "image id '" + std::string(id) +
        "' is invalid: it must match ^[A-Za-z0-9._-]{1,128}$ and must not contain '..'");
  const std::string base = dir_ + "/" + std::string(id);
  struct stat qst {
  }, rst{};
  const bool has_qcow2 = ::stat((base + ".qcow2").c_str(), &qst) == 0;
  const bool has_raw = ::stat((base + ".raw").c_str(), &rst) == 0;
  if (has_qcow2 && has_raw)
    return make_error(Errc::conflict, "image '" + std::string(id) + "' exists as both " + base +
                                          ".qcow2 and " + base + ".raw; remove one of them");
  if (!has_qcow2 && !has_raw)
    return make_error(Errc::not_found, "image '" + std::string(id) + "' not found in " + dir_ +
                                           " (looked for " + std::string(id) + ".qcow2 and " +
                                           std::string(id) + ".raw)");
  ImageInfo info;
  info.id = std::string(id);
  info.path = base + (has_qcow2 ? ".qcow2" : ".raw");
  const struct stat& st = has_qcow2 ? qst : rst;
  if (!S_ISREG(st.st_mode)) return invalid_argument_error("image " + info.path + " is not a regular file");
  info.file_size = static_cast<std::uint64_t>(st.st_size);

  auto header = imagecache::read_header(info.path);
  if (header.ok()) {
    if (!has_qcow2)
      return invalid_argument_error("image " + info.path +
                                    " is named .raw but is a qcow2 image; rename it to " + std::string(id) +
                                    ".qcow2");
    if (header->has_backing())
      return invalid_argument_error(
          "image " + info.path + " has a backing file (" + header->backing_file +
          "); repository images must be standalone: flatten it with qemu-img convert");
    info.format = ImageFormat::qcow2;
    info.virtual_size = header->virtual_size;
    return info;
  }
  if (header.error().code != imagecache::Qcow2Errc::not_qcow2) {
    if (header.error().code == imagecache::Qcow2Errc::io_error)
      return make_error(Errc::io_error, header.error().describe());
    return invalid_argument_error("image " + info.path + " is corrupt: " + header.error().describe());
  }
  if (has_qcow2)
    return invalid_argument_error("image " + info.path +
                                  " is named .qcow2 but has no qcow2 header (garbage or truncated)");
  if (info.file_size == 0) return invalid_argument_error("image " + info.path + " is empty");
  if (info.file_size % 512 != 0)
    return invalid_argument_error("raw image " + info.path + " is " + std::to_string(info.file_size) +
                                  " bytes, not a multiple of 512 (truncated?)");
  info.format = ImageFormat::raw;
  info.virtual_size = info.file_size;
  return info;
}

namespace {

// The id a repository file name boots as: "<id>" of "<id>.raw" or
// "<id>.qcow2"; empty for any other name.
std::string id_of(const std::string& file) {
  for (std::string_view ext : {".raw", ".qcow2"})
    if (file.size() > ext.size() && file.ends_with(ext)) return file.substr(0, file.size() - ext.size());
  return {};
}

// Format by magic, sizes, and whether find() would boot it.
RepoImage describe(const ImageRepository& repo, int dir_fd, const std::string& file) {
  RepoImage img;
  img.file = file;
  const std::string path = repo.dir() + "/" + file;
  UniqueFd fd(::openat(dir_fd, file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
    img.problem = "cannot open " + path + ": " + std::strerror(errno);
    return img;
  }
  img.file_size = static_cast<std::uint64_t>(st.st_size);
  if (auto refs = imagecache::probe_image(fd.get(), path, ""); refs.ok())
    img.format = refs->format;
  else
    img.problem = refs.error().message;
  img.id = id_of(file);
  if (img.id.empty()) {
    if (img.problem.empty()) img.problem = "not named <id>.raw or <id>.qcow2: cannot be booted";
    return img;
  }
  auto found = repo.find(img.id);
  if (!found.ok()) {
    if (img.problem.empty()) img.problem = found.error().message;
    return img;
  }
  img.virtual_size = found->virtual_size;
  return img;
}

}  // namespace

Result<std::vector<RepoImage>> ImageRepository::list() const {
  UniqueFd dir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    const int err = errno;
    return make_error(err == ENOENT ? Errc::not_found : Errc::io_error,
                      "cannot open the image repository " + dir_ + ": " + std::strerror(err) +
                          (err == ENOENT ? " (create it, or set [images] path)" : ""));
  }
  std::vector<std::string> files;
  const int err = list_dir(dir.get(), [&](const DirEntry& e) {
    struct stat st {};
    const bool regular =
        e.type == DT_REG ||
        ((e.type == DT_LNK || e.type == DT_UNKNOWN) &&
         ::fstatat(dir.get(), std::string(e.name).c_str(), &st, 0) == 0 && S_ISREG(st.st_mode));
    if (regular) files.emplace_back(e.name);
  });
  if (err != 0)
    return make_error(Errc::io_error, "cannot list the image repository " + dir_ + ": " + std::strerror(err));
  std::sort(files.begin(), files.end());
  std::vector<RepoImage> out;
  for (const auto& f : files) out.push_back(describe(*this, dir.get(), f));
  return out;
}

}  // namespace virtcap::libvirt
