// ImageBuilder: builds small, real OCI images inside a test, layer by layer, with umoci (Debian
// package), so a test knows every byte of the image it pulls. Typical use:
//
//   ImageBuilder b(dir.Sub("image"));
//   b.AddLayer(LayerChanges::Busybox());
//   b.AddLayer({.files = {{"/data/hello.txt", "hello\n"}}, .deletions = {"/bin/vi"}});
//   b.SetCmd({"/bin/sh"});
//   auto image = b.Build("v1");            // OCI layout at image->layout_dir, tag "v1"
//   registry->PushOciLayout(image->layout_dir, "v1", "test/app:v1");
//
// Layers are gzip tar streams as umoci writes them; deletions become whiteout entries
// (`.wh.<name>`) in the layer that deletes. Not thread-safe; one builder per image.
#ifndef LAZYPULL_TESTS_HARNESS_IMAGE_BUILDER_H_
#define LAZYPULL_TESTS_HARNESS_IMAGE_BUILDER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::testing {

// The changes one layer makes to the filesystem of the layers below it. Paths are absolute
// inside the image ("/etc/hello"). Applied in this order: deletions, dirs, files, symlinks,
// hardlinks, busybox.
struct LayerChanges {
  struct File {
    std::string path;
    std::string content;
    mode_t mode = 0644;
    uid_t uid = 0;
    gid_t gid = 0;
    // Modification time (seconds since the epoch); 0 leaves the time of the build. Python
    // checks a .pyc against its source's mtime, so an image of a real stdlib keeps them.
    time_t mtime = 0;
  };
  struct Dir {
    std::string path;
    mode_t mode = 0755;
  };
  struct Link {
    std::string path;
    std::string target;  // symlink: target text; hardlink: absolute in-image path of the file
  };

  std::vector<File> files;  // parent directories are created 0755 as needed
  std::vector<Dir> dirs;
  std::vector<Link> symlinks;
  std::vector<Link> hardlinks;
  std::vector<std::string> deletions;  // files or whole directories present in a lower layer
  // Installs Debian's static busybox as /bin/busybox with a /bin/<applet> symlink for each
  // applet, plus /etc, /tmp (1777), /root, /proc, /sys, /dev: enough to `ctr run` /bin/sh.
  bool busybox = false;

  // A base layer with only busybox.
  static LayerChanges Busybox() {
    LayerChanges c;
    c.busybox = true;
    return c;
  }
};

// What Build produced. Digests are "sha256:<hex>".
struct BuiltImage {
  std::string layout_dir;  // OCI image layout directory
  std::string tag;
  std::string manifest_digest;
  std::string config_digest;
  std::vector<std::string> layer_digests;   // compressed blobs, base layer first
  std::vector<std::string> layer_diff_ids;  // uncompressed digests, base layer first
  std::vector<int64_t> layer_sizes;         // compressed sizes, base layer first
  std::string manifest_json;                // exact manifest bytes
  // "oci:<layout_dir>:<tag>", as skopeo and umoci name it.
  std::string OciReference() const { return "oci:" + layout_dir + ":" + tag; }
};

class ImageBuilder {
 public:
  // Everything (layout, unpacked bundles) lives under `work_dir`, created if missing; it must
  // outlive the BuiltImage's use.
  explicit ImageBuilder(std::string work_dir);

  // Appends a layer. Nothing happens on disk until Build.
  ImageBuilder& AddLayer(LayerChanges changes);
  // Image config; defaults: Env PATH=/usr/sbin:/usr/bin:/sbin:/bin, no Cmd.
  ImageBuilder& SetCmd(std::vector<std::string> cmd);
  ImageBuilder& SetEntrypoint(std::vector<std::string> entrypoint);
  ImageBuilder& AddEnv(std::string key_equals_value);
  ImageBuilder& SetWorkingDir(std::string dir);

  // Builds the OCI layout <work_dir>/layout with `tag` (umoci init/new/unpack/repack/config/gc)
  // and reads back its manifest. May be called once per builder. Errors carry the failing
  // umoci command and its output.
  absl::StatusOr<BuiltImage> Build(const std::string& tag = "latest");

 private:
  std::string work_dir_;
  std::vector<LayerChanges> layers_;
  std::vector<std::string> cmd_, entrypoint_, env_;
  std::string working_dir_;
};

// Reads an OCI layout's manifest for `tag` (index.json annotation org.opencontainers.image.ref.
// name) and fills a BuiltImage. Works on any OCI layout, not only ImageBuilder's.
absl::StatusOr<BuiltImage> ReadOciLayout(const std::string& layout_dir, const std::string& tag);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_IMAGE_BUILDER_H_
