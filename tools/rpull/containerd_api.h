// ContainerdApi: the part of containerd's gRPC API that `lazypull rpull` needs — leases, the
// content store, image records, snapshots (through containerd, so its metadata and GC know
// them) and the diff service. Narrow on purpose: the puller is written against it, and a test
// can inject one failure between two calls.
//
// Every call runs in the namespace given at construction and, after SetLease, under that lease
// (gRPC metadata `containerd-namespace` / `containerd-lease`, as containerd's Go client sends).
// Errors keep containerd's gRPC code (e.g. ALREADY_EXISTS from Prepare of a lazy layer,
// NOT_FOUND from Stat) with a message naming the call.
#ifndef LAZYPULL_TOOLS_RPULL_CONTAINERD_API_H_
#define LAZYPULL_TOOLS_RPULL_CONTAINERD_API_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "lazypull/digest.h"

namespace lazypull::rpull {

using Labels = std::map<std::string, std::string>;

// containerd.types.Mount.
struct Mount {
  std::string type;
  std::string source;
  std::string target;
  std::vector<std::string> options;
};

// containerd's image record: a name pointing at a root descriptor in the content store.
struct ImageRecord {
  std::string name;
  oci::Descriptor target;  // media_type, digest, size (annotations are not stored)
  Labels labels;
};

// Called with successive pieces of a blob; returns an error to abort the write.
using ChunkWriter = std::function<absl::Status(uint64_t offset, std::string_view bytes)>;
// Produces a blob by calling the writer (in order; it may restart at offset 0, which discards
// what was written, as RegistryClient::FetchBlobStream does after a digest mismatch).
using BlobProducer = std::function<absl::Status(const ChunkWriter& write)>;

// Implementations are used from one thread at a time (thread-compatible).
class ContainerdApi {
 public:
  virtual ~ContainerdApi() = default;

  // Waits up to `timeout` for containerd to accept a connection. Unavailable with the socket
  // path when it does not (not running, wrong --address).
  virtual absl::Status Connect(std::chrono::milliseconds timeout) = 0;

  // --- Leases -------------------------------------------------------------------------------
  // Creates a lease that expires on its own after `expire` (containerd.io/gc.expire), so a
  // killed client leaves nothing pinned forever. Returns its id.
  virtual absl::StatusOr<std::string> CreateLease(std::chrono::seconds expire) = 0;
  // Deletes a lease; what nothing else references becomes garbage.
  virtual absl::Status DeleteLease(const std::string& id) = 0;
  // Runs every later call under `id` ("" = no lease).
  virtual void SetLease(std::string id) = 0;

  // --- Content ------------------------------------------------------------------------------
  // The labels of a blob in the content store; NotFound if it is not there.
  virtual absl::StatusOr<Labels> ContentLabels(const Digest& digest) = 0;
  // Sets (merges) `labels` on an existing blob.
  virtual absl::Status SetContentLabels(const Digest& digest, const Labels& labels) = 0;
  // Writes a blob through a write session named `ref`: containerd checks desc.size and
  // desc.digest at commit and stores it with `labels`. AlreadyExists is success (the blob is
  // there; its labels are then merged with SetContentLabels).
  virtual absl::Status WriteContent(const std::string& ref, const oci::Descriptor& desc,
                                    const Labels& labels, const BlobProducer& producer) = 0;

  // --- Images -------------------------------------------------------------------------------
  // NotFound if no record has `name`.
  virtual absl::StatusOr<ImageRecord> GetImage(const std::string& name) = 0;
  // Creates the record, or updates target and labels of an existing one of that name.
  virtual absl::Status PutImage(const ImageRecord& image) = 0;

  // --- Snapshots (containerd's metadata snapshotter in front of `snapshotter`) ---------------
  // Mounts of an active snapshot. The error of the backend as is (ALREADY_EXISTS when a
  // remote snapshotter made the target from the labels).
  virtual absl::StatusOr<std::vector<Mount>> Prepare(const std::string& snapshotter,
                                                     const std::string& key,
                                                     const std::string& parent,
                                                     const Labels& labels) = 0;
  virtual absl::Status Commit(const std::string& snapshotter, const std::string& name,
                              const std::string& key, const Labels& labels) = 0;
  // The labels of snapshot `key` if it exists (committed or active), NotFound if not.
  virtual absl::StatusOr<Labels> Stat(const std::string& snapshotter, const std::string& key) = 0;
  virtual absl::Status Remove(const std::string& snapshotter, const std::string& key) = 0;

  // --- Diff ---------------------------------------------------------------------------------
  // Applies the layer blob `layer` (already in the content store) onto `mounts`; returns the
  // digest of the uncompressed layer (its DiffID).
  virtual absl::StatusOr<Digest> Apply(const oci::Descriptor& layer,
                                       const std::vector<Mount>& mounts) = 0;
};

// The real API over containerd's gRPC socket `address` (a path) in `namespace_name`.
std::unique_ptr<ContainerdApi> NewGrpcContainerdApi(const std::string& address,
                                                    const std::string& namespace_name);

}  // namespace lazypull::rpull

#endif  // LAZYPULL_TOOLS_RPULL_CONTAINERD_API_H_
