#include "tools/optimize/prefetch_recorder.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"
#include "tools/optimize/access_recorder.h"
#include "tools/optimize/container_spec.h"
#include "tools/optimize/interrupt_guard.h"
#include "tools/optimize/layer_assignment.h"
#include "tools/optimize/layer_unpacker.h"
#include "tools/optimize/overlay_mount.h"
#include "tools/optimize/runc_container.h"
#include "tools/optimize/scratch_dir.h"

namespace lazypull::optimize {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(fmt::format("mkdir {}: {}", path, strerror(errno)));
  }
  return absl::OkStatus();
}

// The manifest to run: the root itself, or the index entry for this host's platform.
absl::StatusOr<oci::Manifest> HostManifest(convert::ImageStore& src) {
  auto root = src.GetRoot();
  if (!root.ok()) return root.status();
  auto sniffed = oci::SniffMediaType(root->bytes);
  if (!sniffed.ok()) return sniffed.status();
  std::string media_type = !sniffed->empty() ? *sniffed : root->descriptor.media_type;
  if (!oci::IsIndexType(media_type)) return oci::ParseManifest(root->bytes, media_type);
  auto index = oci::ParseIndex(root->bytes, media_type);
  if (!index.ok()) return index.status();
  auto chosen = oci::SelectPlatformManifest(*index, oci::HostPlatform());
  if (!chosen.ok()) {
    return absl::FailedPreconditionError(
        fmt::format("--optimize runs the image on this host ({}): {}",
                    oci::HostPlatform().ToString(), std::string(chosen.status().message())));
  }
  auto bytes = src.GetManifest(*chosen);
  if (!bytes.ok()) return bytes.status();
  return oci::ParseManifest(*bytes, chosen->media_type);
}

std::string UniqueContainerId() {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("lazypull-optimize-{}-{}-{}", getpid(),
                     Clock::now().time_since_epoch().count() % 1000000007, counter++);
}

// Runs the container to its end or the deadline while draining `recorder`.
struct RunOutcome {
  bool timed_out = false;
  std::string exit;
};
absl::StatusOr<RunOutcome> RunAndRecord(RuncContainer& container, AccessRecorder& recorder,
                                        InterruptGuard& interrupt,
                                        std::chrono::milliseconds timeout) {
  RunOutcome out;
  if (auto st = container.Start(); !st.ok()) return st;
  const Clock::time_point deadline = Clock::now() + timeout;
  for (bool exited = false; !exited;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      out.timed_out = true;
      break;
    }
    struct pollfd fds[3] = {
        {recorder.fd(), POLLIN, 0}, {container.pidfd(), POLLIN, 0}, {interrupt.fd(), POLLIN, 0}};
    int n = ::poll(fds, 3, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (n < 0 && errno != EINTR) {
      return absl::InternalError(fmt::format("poll: {}", strerror(errno)));
    }
    if (n > 0 && (fds[2].revents & POLLIN)) {
      if (auto st = interrupt.Check(); !st.ok()) return st;  // the caller's RAII cleans up
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      if (auto st = recorder.Drain(); !st.ok()) return st;
    }
    exited = n > 0 && (fds[1].revents & (POLLIN | POLLHUP));
  }
  if (out.timed_out) {
    if (auto st = container.Kill(); !st.ok()) return st;
    out.exit = fmt::format("killed after the timeout of {} ms", timeout.count());
  } else {
    auto status = container.WaitUntil(Clock::now());
    if (!status.ok()) return status.status();
    out.exit = *status < 0 ? "exited (status unknown)" : DescribeWaitStatus(*status);
  }
  // Opens are queued when they happen: everything the program did is in the queue now.
  if (auto st = recorder.Drain(); !st.ok()) return st;
  return out;
}

}  // namespace

absl::StatusOr<RecordedPrefetch> RecordPrefetch(convert::ImageStore& src,
                                                const OptimizeOptions& options) {
  // First, so it is destroyed last: a signal during the run ends it through the cleanups.
  InterruptGuard interrupt;
  auto manifest = HostManifest(src);
  if (!manifest.ok()) return manifest.status();
  auto config_bytes = src.GetBlob(manifest->config);
  if (!config_bytes.ok()) return config_bytes.status();
  auto config = oci::ImageConfig::Parse(*config_bytes);
  if (!config.ok()) return config.status();
  if (config->diff_ids().size() != manifest->layers.size()) {
    return absl::InvalidArgumentError(fmt::format("config lists {} diff_ids for {} layers",
                                                  config->diff_ids().size(),
                                                  manifest->layers.size()));
  }

  auto scratch = ScratchDir::Create(options.work_dir, "lazypull-optimize-");
  if (!scratch.ok()) return scratch.status();
  for (const char* d : {"l", "upper", "work", "root"}) {
    if (auto st = MakeDir(scratch->Sub(d)); !st.ok()) return st;
  }

  RecordedPrefetch result;
  std::vector<LayerFiles> layer_files;
  std::vector<std::string> lowerdirs;  // topmost first
  for (size_t i = 0; i < manifest->layers.size(); ++i) {
    const oci::Descriptor& layer = manifest->layers[i];
    if (!oci::IsLayerType(layer.media_type) ||
        oci::LayerCompressionOf(layer.media_type) == oci::LayerCompression::kUnknown) {
      continue;  // not a filesystem layer (the converter copies it as is)
    }
    const std::string dir = scratch->Sub("l/" + std::to_string(i));
    if (auto st = MakeDir(dir); !st.ok()) return st;
    auto blob = src.OpenBlob(layer, scratch->Sub("blob-" + std::to_string(i)));
    if (!blob.ok()) return blob.status();
    UnpackOptions unpack;
    unpack.expected_diff_id = config->diff_ids()[i];
    unpack.scratch_prefix = scratch->Sub("unpack-" + std::to_string(i));
    auto unpacked = UnpackLayer(**blob, dir, layer.digest.ToString(), unpack);
    if (!unpacked.ok()) return unpacked.status();
    if (auto st = interrupt.Check(); !st.ok()) return st;
    LogDebug("optimize: layer unpacked",
             {{"layer", layer.digest.ToString()}, {"files", unpacked->regular_files.size()}});
    layer_files.push_back({layer.digest.ToString(), std::move(unpacked->regular_files)});
    result.layer_digests.push_back(layer.digest.ToString());
    lowerdirs.insert(lowerdirs.begin(), dir);
  }
  if (lowerdirs.empty()) return absl::InvalidArgumentError("the image has no filesystem layer");

  const std::string rootfs = scratch->Sub("root");
  auto mount = OverlayMount::Mount(lowerdirs, scratch->Sub("upper"), scratch->Sub("work"), rootfs);
  if (!mount.ok()) return mount.status();
  auto process = ProcessFromImage(config->json(), options.command, rootfs);
  if (!process.ok()) return process.status();
  result.command = process->args;

  RuncOptions runc;
  runc.runc = options.runc;
  runc.id = UniqueContainerId();
  runc.state_dir = scratch->Sub("runc-state");
  runc.bundle_dir = scratch->Sub("bundle");
  runc.rootfs = rootfs;
  runc.output_path = scratch->Sub("container.log");
  LogInfo("optimize: running the image", {{"command", process->args},
                                          {"uid", process->uid},
                                          {"cwd", process->cwd},
                                          {"timeout_ms", options.timeout.count()}});
  std::optional<RunOutcome> outcome;
  std::vector<std::string> accessed;
  {
    auto container = RuncContainer::Create(runc, *process);
    if (!container.ok()) return container.status();
    // Recording starts after `runc create`: runc's setup (e.g. reading /etc/passwd) is done.
    auto recorder = AccessRecorder::Start(rootfs);
    if (!recorder.ok()) return recorder.status();
    auto ran = RunAndRecord(**container, **recorder, interrupt, options.timeout);
    if (!ran.ok()) return ran.status();
    outcome = *ran;
    accessed = (*recorder)->paths();
    if ((*recorder)->overflows() > 0) {
      LogWarn("optimize: fanotify queue overflowed; the recording is partial",
              {{"overflows", (*recorder)->overflows()}});
    }
  }  // runc delete -f before the unmount
  if (auto st = (*mount)->Unmount(); !st.ok()) return st;

  const std::string output = FileTail(runc.output_path, 4096);
  if (outcome->timed_out) {
    LogWarn("optimize: the program ran into the timeout; keeping what it opened so far",
            {{"timeout_ms", options.timeout.count()},
             {"files", accessed.size()},
             {"output_tail", output}});
  } else {
    LogInfo("optimize: the program ended",
            {{"exit", outcome->exit}, {"files", accessed.size()}, {"output_tail", output}});
  }
  result.timed_out = outcome->timed_out;
  result.exit = outcome->exit;
  LayerAssignment assigned = AssignToLayers(accessed, layer_files);
  result.accessed = std::move(accessed);
  result.by_layer = std::move(assigned.by_layer);
  result.unassigned = std::move(assigned.unassigned);
  return result;
}

}  // namespace lazypull::optimize
