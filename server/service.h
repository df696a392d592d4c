// SnapshotsService: containerd.services.snapshots.v1.Snapshots over a Snapshotter.
//
// Decodes requests, calls the Snapshotter, and maps absl codes to the gRPC codes containerd's
// errdefs.FromGRPC understands (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument,
// ...). The `snapshotter` field and the containerd-namespace metadata are ignored: containerd
// already namespaces keys ("<ns>/<n>/<key>"). Every handler runs under GuardRpc, so an
// exception fails that one call with INTERNAL and the daemon keeps serving. Thread-safe; the
// Snapshotter must outlive it.
#ifndef LAZYPULL_SERVER_SERVICE_H_
#define LAZYPULL_SERVER_SERVICE_H_

#include <exception>
#include <string_view>

#include "absl/status/status.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "server/snapshotter.h"

namespace lazypull {

namespace snapshots_v1 = ::containerd::services::snapshots::v1;

// absl::Status → grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The answer to an RPC whose handler threw: INTERNAL, after a log line naming the RPC, the key
// and `what` (null for a non-std exception). Never throws itself.
grpc::Status RpcThrew(std::string_view rpc, std::string_view key, const char* what) noexcept;

// Runs an RPC handler body (returning grpc::Status); an exception escaping it (bad_alloc, ...)
// becomes RpcThrew's INTERNAL instead of unwinding into gRPC (std::terminate for the daemon).
template <typename Body>
grpc::Status GuardRpc(std::string_view rpc, std::string_view key, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return RpcThrew(rpc, key, e.what());
  } catch (...) {
    return RpcThrew(rpc, key, nullptr);
  }
}

class SnapshotsService final : public snapshots_v1::Snapshots::Service {
 public:
  explicit SnapshotsService(Snapshotter* snapshotter) : snapshotter_(snapshotter) {}

  grpc::Status Prepare(grpc::ServerContext* ctx, const snapshots_v1::PrepareSnapshotRequest* req,
                       snapshots_v1::PrepareSnapshotResponse* resp) override;
  grpc::Status View(grpc::ServerContext* ctx, const snapshots_v1::ViewSnapshotRequest* req,
                    snapshots_v1::ViewSnapshotResponse* resp) override;
  grpc::Status Mounts(grpc::ServerContext* ctx, const snapshots_v1::MountsRequest* req,
                      snapshots_v1::MountsResponse* resp) override;
  grpc::Status Commit(grpc::ServerContext* ctx, const snapshots_v1::CommitSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Remove(grpc::ServerContext* ctx, const snapshots_v1::RemoveSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx, const snapshots_v1::StatSnapshotRequest* req,
                    snapshots_v1::StatSnapshotResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx, const snapshots_v1::UpdateSnapshotRequest* req,
                      snapshots_v1::UpdateSnapshotResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const snapshots_v1::ListSnapshotsRequest* req,
                    grpc::ServerWriter<snapshots_v1::ListSnapshotsResponse>* writer) override;
  grpc::Status Usage(grpc::ServerContext* ctx, const snapshots_v1::UsageRequest* req,
                     snapshots_v1::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx, const snapshots_v1::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  Snapshotter* snapshotter_;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_SERVICE_H_
