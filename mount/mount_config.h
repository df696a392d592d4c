// MountConfig: how lazy layers are mounted and fetched; the `[mount]` TOML section.
//
//   [mount]
//   backend = "auto"               # "auto" (erofs when the kernel can, else fuse) | "fuse" |
//                                  # "erofs" (start fails when the kernel cannot)
//   graduation = true              # erofs: serve fully fetched layers from a local copy of the
//                                  # original tar, with no FUSE at all
//   erofs_attach = "auto"          # erofs: how images reach the kernel: "file" (file-backed
//                                  # mounts, Linux 6.12+), "loop" (loop devices, 5.16+) or
//                                  # "auto" (file-backed if a probe mount works, else loop)
//   erofs_probe_filesystems = "/proc/filesystems"  # where the erofs probe looks (tests)
//   fetch_timeout = "30s"          # a read waiting longer for the registry fails with EIO
//   prefetch = true                # fetch the eStargz prioritized range at mount
//   max_request_size = "16MiB"     # largest range of an on-demand fetch
//   max_chunk_in_memory = "8MiB"   # larger chunks stream through a verified temp file
//   file_readahead = "4MiB"        # a miss also fetches the file's next chunks (0 = off)
//   readahead_window = "256KiB"    # ... and the next chunks in blob order (other files),
//   readahead_window_max = "4MiB"  #     adaptive up to this (compressed bytes; 0 = off)
//   directory_batch = "256KiB"     # a miss on a file this small also fetches its directory's
//                                  #     other small files, adaptive budget (0 = off)
//   elf_prefetch = true            # a program reading an ELF file from its start: fetch its
//                                  #     interpreter and libraries whole, ahead of the loader
//   background_fetch = true        # then fetch the whole layer in the background:
//   background_silence = "2s"      #   once the layer saw no on-demand fetch for this long,
//   background_quiet = "500ms"     #   never while a container's fetch runs nor this soon after,
//   background_request_size = "512KiB"  # in requests this small,
//   background_concurrency = 2     #   at most this many at once on the node,
//   background_bandwidth = "auto"  #   within a node-wide budget: "auto" = a fraction of the
//   background_bandwidth_fraction = 0.5  # measured link throughput; bytes/s or "20MiB"; 0 = none
//   fuse_threads = 16              # max FUSE worker threads per mounted layer
//   attr_timeout = "24h"           # kernel cache lifetime of entries/attributes
//   fuse_passthrough = true        # fully local files open in FUSE passthrough mode (reads
//                                  #     go to a local backing file in the kernel; 6.9+, root)
//   fuse_holder_socket = ""        # the FUSE holder (FUSE mounts survive daemon restarts);
//                                  #     "" = <root>/fuse-holder.sock
//
// Value type; thread-compatible.
#ifndef LAZYPULL_MOUNT_MOUNT_CONFIG_H_
#define LAZYPULL_MOUNT_MOUNT_CONFIG_H_

#include <toml++/toml.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/op_observer.h"

namespace lazypull::mount {

class FuseHolderClient;

enum class BackendKind { kFuse, kErofs, kAuto };
std::string_view BackendKindName(BackendKind kind);

// How the EROFS backend hands images to the kernel (mount/erofs/kernel_mount.h).
enum class ErofsAttach { kAuto, kFile, kLoop };
std::string_view ErofsAttachName(ErofsAttach attach);

// Options of the FUSE backend.
struct FuseOptions {
  // Upper bound of worker threads of one mount's multi-threaded session loop.
  unsigned max_threads = 16;
  // Entry and attribute cache lifetime handed to the kernel. Layers are immutable, so long.
  std::chrono::seconds attr_timeout{24 * 3600};
  // Largest read request and kernel readahead, in bytes. Below 1 MiB on purpose: a zero-copy
  // reply needs a pipe holding the data plus a page per buffer, and a process without
  // CAP_SYS_RESOURCE cannot grow a pipe past fs.pipe-max-size (1 MiB by default).
  unsigned max_read = 768 << 10;
  // Kernel readahead of the mount (bdi read_ahead_kb), in bytes. Larger than max_read so a
  // sequential read keeps several requests in flight: the worker threads then read the
  // chunk-cache files concurrently instead of one request at a time.
  unsigned readahead = 4 << 20;
  // `allow_other` + `default_permissions`: non-root readers get the normal permission checks
  // instead of EACCES (overlayfs as root works either way).
  bool allow_other = true;
  // Reads whose bytes are all in the chunk cache are answered by splicing the cache files'
  // pages into the reply (no copy through the daemon) instead of read + write.
  bool zero_copy = true;
  // How long Unmount waits for the session to end before aborting the FUSE connection
  // (it stays alive while something, e.g. an overlay mount, still uses the lazy mount).
  std::chrono::milliseconds unmount_timeout{2000};
  // Not from TOML: told about every FUSE request of the layer and blob file systems (the
  // daemon's metrics). Null = none.
  std::shared_ptr<FsOpObserver> op_observer;
  // The FUSE holder's socket (`[mount] fuse_holder_socket`; "" = <root>/fuse-holder.sock,
  // filled in by the daemon). Mounts survive a crash or upgrade of the daemon while a holder
  // listens there (tools/fuse_holder/); without one, they are mounted afresh at each start.
  std::string holder_socket;
  // Not from TOML: the connection to the holder (null = no handover). See FuseSession.
  std::shared_ptr<FuseHolderClient> holder;
  // `[mount] fuse_passthrough`: when the kernel offers FUSE passthrough and the daemon may use
  // it (CAP_SYS_ADMIN, state on a non-stacked file system), files that are entirely local and
  // verified open in passthrough mode: the kernel reads a local backing file itself, with no
  // daemon round trip nor second page-cache copy (mount/fuse/passthrough_files.h). Costs an
  // OPEN round trip per open on such mounts. Needs passthrough_dir.
  bool passthrough = true;
  // Not from TOML: where each mount keeps its passthrough state (a directory per mount
  // target: the handover ledger and assembled backing files); "" = no passthrough. The
  // daemon sets <root>/fuse-passthrough.
  std::string passthrough_dir;
};

// Options of the EROFS backend (mount/erofs/).
struct ErofsOptions {
  // State: <dir>/blobs (the blob file system), <dir>/images (lazy metadata images, unlinked
  // once mounted), <dir>/graduated (local copies). "" = the daemon sets <root>/erofs.
  std::string dir;
  // Build a local copy of each fully fetched layer and serve new mounts from it.
  bool graduation = true;
  // How often mounted layers are checked for being fully fetched.
  std::chrono::milliseconds graduation_check{1000};
  // The probe requires "erofs" in this file (a test points it at one without).
  std::string probe_filesystems = "/proc/filesystems";
  // File-backed mounts, loop devices, or whichever works here (file-backed first).
  ErofsAttach attach = ErofsAttach::kAuto;
};

struct MountConfig {
  BackendKind backend = BackendKind::kAuto;
  FuseOptions fuse;
  ErofsOptions erofs;
  // Fetch behaviour of every layer (executor and cache are filled in by the owner).
  LayerReaderOptions reader;
  // ELF-aware startup prefetch (fetcher/startup/elf_prefetcher.h) for every lazy layer.
  bool elf_prefetch = true;
};

// Parses the `[mount]` section (the section's table). Missing keys keep defaults.
// InvalidArgument naming `mount.<key>` for unknown keys, wrong types or bad values.
absl::StatusOr<MountConfig> ParseMountConfig(const toml::table& section);

// "250ms", "30s", "5m", "24h", or an integer number of milliseconds. InvalidArgument
// otherwise.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_MOUNT_CONFIG_H_
