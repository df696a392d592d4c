#include "tests/harness/image_builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kBusyboxPath[] = "/bin/busybox";

absl::Status Run(const std::vector<std::string>& argv) {
  auto r = RunCommand(argv, std::chrono::seconds(300));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        fmt::format("`{}` exited {}: {}", absl::StrJoin(argv, " "), r->exit_code, r->output));
  }
  return absl::OkStatus();
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(fmt::format("{} {}: {}", what, path, strerror(errno)));
}

absl::Status FsError(const std::string& what, const std::string& path, const std::error_code& ec) {
  return absl::InternalError(fmt::format("{} {}: {}", what, path, ec.message()));
}

// `in_image` must be absolute and must not climb out of the rootfs.
absl::StatusOr<std::string> HostPath(const std::string& rootfs, const std::string& in_image) {
  if (in_image.empty() || in_image[0] != '/') {
    return absl::InvalidArgumentError(fmt::format("image path must be absolute: {}", in_image));
  }
  for (absl::string_view part : absl::StrSplit(in_image, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(fmt::format("image path contains ..: {}", in_image));
    }
  }
  return rootfs + in_image;
}

absl::Status MakeParents(const std::string& host_path) {
  std::error_code ec;
  fs::create_directories(fs::path(host_path).parent_path(), ec);
  if (ec) return FsError("create parents of", host_path, ec);
  return absl::OkStatus();
}

absl::Status InstallBusybox(const std::string& rootfs) {
  for (const char* d : {"/bin", "/etc", "/root", "/proc", "/sys", "/dev", "/tmp"}) {
    std::error_code ec;
    fs::create_directories(rootfs + d, ec);
    if (ec) return FsError("mkdir", rootfs + d, ec);
  }
  if (chmod((rootfs + "/tmp").c_str(), 01777) != 0) return ErrnoError("chmod", rootfs + "/tmp");
  std::error_code ec;
  fs::copy_file(kBusyboxPath, rootfs + "/bin/busybox", fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return FsError("copy busybox (install Debian busybox-static) from", kBusyboxPath, ec);
  }
  if (chmod((rootfs + "/bin/busybox").c_str(), 0755) != 0) {
    return ErrnoError("chmod", rootfs + "/bin/busybox");
  }
  auto list = RunCommand({kBusyboxPath, "--list"});
  if (!list.ok()) return list.status();
  if (list->exit_code != 0) return absl::InternalError("busybox --list failed: " + list->output);
  for (absl::string_view applet : absl::StrSplit(list->output, '\n', absl::SkipWhitespace())) {
    if (applet == "busybox") continue;
    std::string link = rootfs + "/bin/" + std::string(applet);
    if (fs::symlink_status(link).type() != fs::file_type::not_found) continue;
    if (symlink("busybox", link.c_str()) != 0) return ErrnoError("symlink", link);
  }
  return WriteFile(rootfs + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
}

absl::Status ApplyChanges(const std::string& rootfs, const LayerChanges& changes) {
  for (const std::string& path : changes.deletions) {
    auto host = HostPath(rootfs, path);
    if (!host.ok()) return host.status();
    std::error_code ec;
    if (fs::remove_all(*host, ec) == 0 || ec) {
      return absl::NotFoundError(
          fmt::format("deletion {}: nothing there in the lower layers ({})", path, ec.message()));
    }
  }
  for (const auto& dir : changes.dirs) {
    auto host = HostPath(rootfs, dir.path);
    if (!host.ok()) return host.status();
    std::error_code ec;
    fs::create_directories(*host, ec);
    if (ec) return FsError("mkdir", *host, ec);
    if (chmod(host->c_str(), dir.mode) != 0) return ErrnoError("chmod", *host);
  }
  for (const auto& file : changes.files) {
    auto host = HostPath(rootfs, file.path);
    if (!host.ok()) return host.status();
    if (absl::Status st = MakeParents(*host); !st.ok()) return st;
    // Replace rather than write through: the old path may be a symlink or a hardlink.
    unlink(host->c_str());
    if (absl::Status st = WriteFile(*host, file.content); !st.ok()) return st;
    if (chmod(host->c_str(), file.mode) != 0) return ErrnoError("chmod", *host);
    if (lchown(host->c_str(), file.uid, file.gid) != 0) return ErrnoError("chown", *host);
    if (file.mtime != 0) {
      const struct timespec times[2] = {{file.mtime, 0}, {file.mtime, 0}};
      if (utimensat(AT_FDCWD, host->c_str(), times, 0) != 0) return ErrnoError("utimensat", *host);
    }
  }
  for (const auto& link : changes.symlinks) {
    auto host = HostPath(rootfs, link.path);
    if (!host.ok()) return host.status();
    if (absl::Status st = MakeParents(*host); !st.ok()) return st;
    unlink(host->c_str());
    if (symlink(link.target.c_str(), host->c_str()) != 0) return ErrnoError("symlink", *host);
  }
  for (const auto& link : changes.hardlinks) {
    auto host = HostPath(rootfs, link.path);
    if (!host.ok()) return host.status();
    auto target = HostPath(rootfs, link.target);
    if (!target.ok()) return target.status();
    if (absl::Status st = MakeParents(*host); !st.ok()) return st;
    unlink(host->c_str());
    if (::link(target->c_str(), host->c_str()) != 0) return ErrnoError("link", *host);
  }
  if (changes.busybox) return InstallBusybox(rootfs);
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(fmt::format("{} is not JSON", path));
  return j;
}

std::string BlobPath(const std::string& layout, const std::string& digest) {
  std::string d = digest;
  size_t colon = d.find(':');
  if (colon != std::string::npos) d[colon] = '/';
  return layout + "/blobs/" + d;
}

}  // namespace

ImageBuilder::ImageBuilder(std::string work_dir) : work_dir_(std::move(work_dir)) {
  env_.push_back("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
}

ImageBuilder& ImageBuilder::AddLayer(LayerChanges changes) {
  layers_.push_back(std::move(changes));
  return *this;
}

ImageBuilder& ImageBuilder::SetCmd(std::vector<std::string> cmd) {
  cmd_ = std::move(cmd);
  return *this;
}

ImageBuilder& ImageBuilder::SetEntrypoint(std::vector<std::string> entrypoint) {
  entrypoint_ = std::move(entrypoint);
  return *this;
}

ImageBuilder& ImageBuilder::AddEnv(std::string key_equals_value) {
  env_.push_back(std::move(key_equals_value));
  return *this;
}

ImageBuilder& ImageBuilder::SetWorkingDir(std::string dir) {
  working_dir_ = std::move(dir);
  return *this;
}

absl::StatusOr<BuiltImage> ImageBuilder::Build(const std::string& tag) {
  const std::string layout = work_dir_ + "/layout";
  const std::string bundle = work_dir_ + "/bundle";
  const std::string image = layout + ":" + tag;
  std::error_code ec;
  if (fs::exists(layout, ec)) {
    return absl::FailedPreconditionError(fmt::format("{} exists: Build runs once", layout));
  }
  fs::create_directories(work_dir_, ec);
  if (ec) return FsError("mkdir", work_dir_, ec);

  if (absl::Status st = Run({"umoci", "init", "--layout", layout}); !st.ok()) return st;
  if (absl::Status st = Run({"umoci", "new", "--image", image}); !st.ok()) return st;
  if (absl::Status st = Run({"umoci", "unpack", "--image", image, bundle}); !st.ok()) return st;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (absl::Status st = ApplyChanges(bundle + "/rootfs", layers_[i]); !st.ok()) {
      return absl::Status(st.code(), fmt::format("layer {}: {}", i, std::string(st.message())));
    }
    absl::Status st = Run({"umoci", "repack", "--refresh-bundle", "--history.created_by",
                           fmt::format("lazypull test layer {}", i), "--image", image, bundle});
    if (!st.ok()) return st;
  }
  std::vector<std::string> config = {"umoci", "config", "--image", image, "--no-history"};
  if (!cmd_.empty()) {
    config.push_back("--clear=config.cmd");
    for (const auto& a : cmd_) config.insert(config.end(), {"--config.cmd", a});
  }
  if (!entrypoint_.empty()) {
    config.push_back("--clear=config.entrypoint");
    for (const auto& a : entrypoint_) config.insert(config.end(), {"--config.entrypoint", a});
  }
  for (const auto& e : env_) config.insert(config.end(), {"--config.env", e});
  if (!working_dir_.empty()) config.insert(config.end(), {"--config.workingdir", working_dir_});
  if (absl::Status st = Run(config); !st.ok()) return st;
  if (absl::Status st = Run({"umoci", "gc", "--layout", layout}); !st.ok()) return st;
  // The unpacked bundle is only scaffolding; drop it so tests do not carry its size.
  fs::remove_all(bundle, ec);
  return ReadOciLayout(layout, tag);
}

namespace {

absl::StatusOr<BuiltImage> ReadOciLayoutOrThrow(const std::string& layout_dir,
                                                const std::string& tag) {
  auto index = ReadJson(layout_dir + "/index.json");
  if (!index.ok()) return index.status();
  BuiltImage out;
  out.layout_dir = layout_dir;
  out.tag = tag;
  for (const auto& m : index->value("manifests", nlohmann::json::array())) {
    if (m.value("/annotations/org.opencontainers.image.ref.name"_json_pointer, "") == tag) {
      out.manifest_digest = m.value("digest", "");
    }
  }
  if (out.manifest_digest.empty()) {
    return absl::NotFoundError(fmt::format("tag {} not in {}/index.json", tag, layout_dir));
  }
  auto manifest_text = ReadFile(BlobPath(layout_dir, out.manifest_digest));
  if (!manifest_text.ok()) return manifest_text.status();
  out.manifest_json = *manifest_text;
  nlohmann::json manifest = nlohmann::json::parse(out.manifest_json, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("config") || !manifest.contains("layers")) {
    return absl::DataLossError(fmt::format("bad manifest {}", out.manifest_digest));
  }
  out.config_digest = manifest["config"].value("digest", "");
  for (const auto& layer : manifest["layers"]) {
    out.layer_digests.push_back(layer.value("digest", ""));
    out.layer_sizes.push_back(layer.value("size", int64_t{0}));
  }
  auto config = ReadJson(BlobPath(layout_dir, out.config_digest));
  if (!config.ok()) return config.status();
  for (const auto& d : config->value("/rootfs/diff_ids"_json_pointer, nlohmann::json::array())) {
    out.layer_diff_ids.push_back(d.get<std::string>());
  }
  return out;
}

}  // namespace

absl::StatusOr<BuiltImage> ReadOciLayout(const std::string& layout_dir, const std::string& tag) {
  // nlohmann throws on type mismatches in a malformed layout; keep that inside this boundary.
  try {
    return ReadOciLayoutOrThrow(layout_dir, tag);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(fmt::format("malformed OCI layout {}: {}", layout_dir, e.what()));
  }
}

}  // namespace lazypull::testing
