#include "server/service.h"

#include <chrono>

#include "base/logging.h"

namespace lazypull {
namespace {

namespace pb = ::google::protobuf;

Labels ToLabels(const pb::Map<std::string, std::string>& m) { return Labels(m.begin(), m.end()); }

void ToProto(const std::vector<MountSpec>& mounts,
             pb::RepeatedPtrField<::containerd::types::Mount>* out) {
  for (const MountSpec& m : mounts) {
    ::containerd::types::Mount* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    pm->set_target(m.target);
    for (const std::string& o : m.options) pm->add_options(o);
  }
}

void ToProto(absl::Time t, pb::Timestamp* out) {
  int64_t ns = absl::ToUnixNanos(t);
  int64_t secs = ns / 1000000000;
  int64_t nanos = ns % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    secs -= 1;
  }
  out->set_seconds(secs);
  out->set_nanos(static_cast<int32_t>(nanos));
}

void ToProto(const SnapshotInfo& info, snapshots_v1::Info* out) {
  out->set_name(info.name);
  out->set_parent(info.parent);
  out->set_kind(static_cast<snapshots_v1::Kind>(info.kind));
  ToProto(info.created_at, out->mutable_created_at());
  ToProto(info.updated_at, out->mutable_updated_at());
  out->mutable_labels()->insert(info.labels.begin(), info.labels.end());
}

// Logs failed RPCs at debug level (NotFound/AlreadyExists are routine for containerd).
grpc::Status Finish(absl::string_view rpc, absl::string_view key, const absl::Status& status) {
  if (!status.ok()) {
    nlohmann::json fields = {{"rpc", rpc}, {"key", key}, {"error", status.ToString()}};
    if (absl::IsInternal(status) || absl::IsUnknown(status)) {
      LogError("rpc failed", fields);
    } else {
      LogDebug("rpc failed", fields);
    }
  }
  return ToGrpcStatus(status);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status RpcThrew(std::string_view rpc, std::string_view key, const char* what) noexcept {
  // Memory may be short (bad_alloc): if even the log line or the message cannot be built, the
  // call still fails cleanly.
  try {
    LogError("rpc threw",
             {{"rpc", rpc}, {"key", key}, {"error", what ? what : "non-std exception"}});
  } catch (...) {
  }
  try {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(rpc) + " failed: " + (what ? what : "unknown exception"));
  } catch (...) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "");
  }
}

grpc::Status SnapshotsService::Prepare(grpc::ServerContext*,
                                       const snapshots_v1::PrepareSnapshotRequest* req,
                                       snapshots_v1::PrepareSnapshotResponse* resp) {
  return GuardRpc("Prepare", req->key(), [&] {
    absl::StatusOr<std::vector<MountSpec>> mounts =
        snapshotter_->Prepare(req->key(), req->parent(), ToLabels(req->labels()));
    if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
    return Finish("Prepare", req->key(), mounts.status());
  });
}

grpc::Status SnapshotsService::View(grpc::ServerContext*,
                                    const snapshots_v1::ViewSnapshotRequest* req,
                                    snapshots_v1::ViewSnapshotResponse* resp) {
  return GuardRpc("View", req->key(), [&] {
    absl::StatusOr<std::vector<MountSpec>> mounts =
        snapshotter_->View(req->key(), req->parent(), ToLabels(req->labels()));
    if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
    return Finish("View", req->key(), mounts.status());
  });
}

grpc::Status SnapshotsService::Mounts(grpc::ServerContext*, const snapshots_v1::MountsRequest* req,
                                      snapshots_v1::MountsResponse* resp) {
  return GuardRpc("Mounts", req->key(), [&] {
    absl::StatusOr<std::vector<MountSpec>> mounts = snapshotter_->Mounts(req->key());
    if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
    return Finish("Mounts", req->key(), mounts.status());
  });
}

grpc::Status SnapshotsService::Commit(grpc::ServerContext*,
                                      const snapshots_v1::CommitSnapshotRequest* req, pb::Empty*) {
  return GuardRpc("Commit", req->key(), [&] {
    return Finish("Commit", req->key(),
                  snapshotter_->Commit(req->name(), req->key(), ToLabels(req->labels())));
  });
}

grpc::Status SnapshotsService::Remove(grpc::ServerContext*,
                                      const snapshots_v1::RemoveSnapshotRequest* req, pb::Empty*) {
  return GuardRpc("Remove", req->key(),
                  [&] { return Finish("Remove", req->key(), snapshotter_->Remove(req->key())); });
}

grpc::Status SnapshotsService::Stat(grpc::ServerContext*,
                                    const snapshots_v1::StatSnapshotRequest* req,
                                    snapshots_v1::StatSnapshotResponse* resp) {
  return GuardRpc("Stat", req->key(), [&] {
    absl::StatusOr<SnapshotInfo> info = snapshotter_->Stat(req->key());
    if (info.ok()) ToProto(*info, resp->mutable_info());
    return Finish("Stat", req->key(), info.status());
  });
}

grpc::Status SnapshotsService::Update(grpc::ServerContext*,
                                      const snapshots_v1::UpdateSnapshotRequest* req,
                                      snapshots_v1::UpdateSnapshotResponse* resp) {
  return GuardRpc("Update", req->info().name(), [&] {
    SnapshotInfo info;
    info.name = req->info().name();
    info.labels = ToLabels(req->info().labels());
    std::vector<std::string> paths(req->update_mask().paths().begin(),
                                   req->update_mask().paths().end());
    absl::StatusOr<SnapshotInfo> updated = snapshotter_->Update(info, paths);
    if (updated.ok()) ToProto(*updated, resp->mutable_info());
    return Finish("Update", info.name, updated.status());
  });
}

grpc::Status SnapshotsService::List(
    grpc::ServerContext*, const snapshots_v1::ListSnapshotsRequest* req,
    grpc::ServerWriter<snapshots_v1::ListSnapshotsResponse>* writer) {
  return GuardRpc("List", "", [&] {
    absl::StatusOr<SnapshotFilter> filter = SnapshotFilter::Parse(
        std::vector<std::string>(req->filters().begin(), req->filters().end()));
    if (!filter.ok()) return Finish("List", "", filter.status());
    absl::StatusOr<std::vector<SnapshotInfo>> infos = snapshotter_->List(*filter);
    if (!infos.ok()) return Finish("List", "", infos.status());
    // Blocks of 100, like containerd's own server.
    constexpr int kBatch = 100;
    snapshots_v1::ListSnapshotsResponse batch;
    for (const SnapshotInfo& info : *infos) {
      ToProto(info, batch.add_info());
      if (batch.info_size() == kBatch) {
        if (!writer->Write(batch)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
        batch.Clear();
      }
    }
    if (batch.info_size() > 0 && !writer->Write(batch)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    }
    return grpc::Status::OK;
  });
}

grpc::Status SnapshotsService::Usage(grpc::ServerContext*, const snapshots_v1::UsageRequest* req,
                                     snapshots_v1::UsageResponse* resp) {
  return GuardRpc("Usage", req->key(), [&] {
    absl::StatusOr<SnapshotUsage> usage = snapshotter_->Usage(req->key());
    if (usage.ok()) {
      resp->set_size(usage->size);
      resp->set_inodes(usage->inodes);
    }
    return Finish("Usage", req->key(), usage.status());
  });
}

grpc::Status SnapshotsService::Cleanup(grpc::ServerContext*, const snapshots_v1::CleanupRequest*,
                                       pb::Empty*) {
  return GuardRpc("Cleanup", "", [&] {
    absl::StatusOr<int> removed = snapshotter_->Cleanup();
    return Finish("Cleanup", "", removed.status());
  });
}

}  // namespace lazypull
