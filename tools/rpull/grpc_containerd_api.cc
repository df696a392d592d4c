// ContainerdApi over containerd's gRPC socket.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <optional>

#include "containerd/services/content/v1/content.grpc.pb.h"
#include "containerd/services/diff/v1/diff.grpc.pb.h"
#include "containerd/services/images/v1/images.grpc.pb.h"
#include "containerd/services/leases/v1/leases.grpc.pb.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "fmt/format.h"
#include "tools/rpull/containerd_api.h"

namespace lazypull::rpull {
namespace {

namespace content_v1 = ::containerd::services::content::v1;
namespace diff_v1 = ::containerd::services::diff::v1;
namespace images_v1 = ::containerd::services::images::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace snapshots_v1 = ::containerd::services::snapshots::v1;

// containerd's gRPC limit for one message is 16 MiB; data messages stay well below.
constexpr size_t kWriteMessageBytes = 1 << 20;
// One call that is not a blob transfer: generous, because containerd's Diff.Apply of a big
// layer and GC-synchronous calls can take a while, but bounded so a wedged containerd ends the
// pull with an error instead of hanging it.
constexpr std::chrono::minutes kCallTimeout{10};

absl::Status FromGrpc(const grpc::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      fmt::format("containerd {}: {}", what, s.error_message()));
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void ToProto(const oci::Descriptor& d, ::containerd::types::Descriptor* out) {
  out->set_media_type(d.media_type);
  out->set_digest(d.digest.ToString());
  out->set_size(d.size);
  for (const auto& [k, v] : d.annotations) (*out->mutable_annotations())[k] = v;
}

class GrpcContainerdApi : public ContainerdApi {
 public:
  GrpcContainerdApi(std::string address, std::string ns)
      : address_(std::move(address)), namespace_(std::move(ns)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);
    channel_ =
        grpc::CreateCustomChannel("unix://" + address_, grpc::InsecureChannelCredentials(), args);
    content_ = content_v1::Content::NewStub(channel_);
    diff_ = diff_v1::Diff::NewStub(channel_);
    images_ = images_v1::Images::NewStub(channel_);
    leases_ = leases_v1::Leases::NewStub(channel_);
    snapshots_ = snapshots_v1::Snapshots::NewStub(channel_);
  }

  absl::Status Connect(std::chrono::milliseconds timeout) override {
    if (channel_->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(
        fmt::format("containerd is not reachable at {} (is it running? see --address)", address_));
  }

  absl::StatusOr<std::string> CreateLease(std::chrono::seconds expire) override {
    leases_v1::CreateRequest req;
    // Random enough to never collide with a concurrent rpull; containerd's client does alike.
    req.set_id(fmt::format("lazypull-rpull-{}-{}",
                           std::chrono::system_clock::now().time_since_epoch().count(),
                           ::getpid()));
    (*req.mutable_labels())["containerd.io/gc.expire"] =
        Rfc3339(std::chrono::system_clock::now() + expire);
    leases_v1::CreateResponse resp;
    auto ctx = Context(/*with_lease=*/false);
    if (auto st = FromGrpc(leases_->Create(ctx.get(), req, &resp), "Leases.Create"); !st.ok()) {
      return st;
    }
    return resp.lease().id();
  }

  absl::Status DeleteLease(const std::string& id) override {
    leases_v1::DeleteRequest req;
    req.set_id(id);
    google::protobuf::Empty resp;
    auto ctx = Context(/*with_lease=*/false);
    return FromGrpc(leases_->Delete(ctx.get(), req, &resp), "Leases.Delete");
  }

  void SetLease(std::string id) override { lease_ = std::move(id); }

  absl::StatusOr<Labels> ContentLabels(const Digest& digest) override {
    content_v1::InfoRequest req;
    req.set_digest(digest.ToString());
    content_v1::InfoResponse resp;
    auto ctx = Context();
    if (auto st = FromGrpc(content_->Info(ctx.get(), req, &resp),
                           fmt::format("Content.Info {}", digest.ToString()));
        !st.ok()) {
      return st;
    }
    return Labels(resp.info().labels().begin(), resp.info().labels().end());
  }

  absl::Status SetContentLabels(const Digest& digest, const Labels& labels) override {
    if (labels.empty()) return absl::OkStatus();
    content_v1::UpdateRequest req;
    req.mutable_info()->set_digest(digest.ToString());
    for (const auto& [k, v] : labels) {
      (*req.mutable_info()->mutable_labels())[k] = v;
      req.mutable_update_mask()->add_paths("labels." + k);
    }
    content_v1::UpdateResponse resp;
    auto ctx = Context();
    return FromGrpc(content_->Update(ctx.get(), req, &resp),
                    fmt::format("Content.Update {}", digest.ToString()));
  }

  absl::Status WriteContent(const std::string& ref, const oci::Descriptor& desc,
                            const Labels& labels, const BlobProducer& producer) override {
    const std::string what = fmt::format("Content.Write {}", desc.digest.ToString());
    // No deadline for big blobs: a big layer on a slow link may take long, and the registry
    // side has its own low-speed and total timeouts.
    auto ctx = Context(/*with_lease=*/true, /*with_deadline=*/desc.size < (16 << 20));
    auto stream = content_->Write(ctx.get());
    content_v1::WriteContentResponse resp;
    // Ends the call once: gRPC's Finish blocks until every incoming message has been read, so
    // drain first (the server has closed its side, or is told to by TryCancel).
    std::optional<absl::Status> finished;
    auto finish = [&](bool cancel) -> absl::Status {
      if (!finished) {
        if (cancel) ctx->TryCancel();
        stream->WritesDone();
        content_v1::WriteContentResponse ignored;
        while (stream->Read(&ignored)) {
        }
        finished = FromGrpc(stream->Finish(), what);
      }
      return *finished;
    };
    // Every request gets one response; reading it keeps errors close to their cause.
    auto exchange = [&](const content_v1::WriteContentRequest& req) -> absl::Status {
      if (!stream->Write(req) || !stream->Read(&resp)) {
        absl::Status st = finish(/*cancel=*/false);
        return st.ok() ? absl::InternalError(what + ": containerd ended the session early") : st;
      }
      return absl::OkStatus();
    };
    content_v1::WriteContentRequest req;
    req.set_action(content_v1::STAT);
    req.set_ref(ref);
    req.set_total(desc.size);
    req.set_expected(desc.digest.ToString());
    if (auto st = exchange(req); !st.ok()) {
      return absl::IsAlreadyExists(st) ? SetContentLabels(desc.digest, labels) : st;
    }

    // containerd shares blobs between namespaces: when the blob is already there, the session
    // starts complete (offset == size) and only the commit is needed, as containerd's client
    // does. Writing it again would have containerd truncate and copy the shared blob.
    absl::Status write_status = absl::OkStatus();
    if (resp.offset() != desc.size) {
      write_status = producer([&](uint64_t offset, std::string_view bytes) {
        for (size_t done = 0; done < bytes.size();) {
          const size_t n = std::min(kWriteMessageBytes, bytes.size() - done);
          content_v1::WriteContentRequest w;
          w.set_action(content_v1::WRITE);
          w.set_ref(ref);
          // Offset 0 truncates what an earlier attempt wrote (containerd's write semantics).
          w.set_offset(static_cast<int64_t>(offset + done));
          w.set_data(bytes.data() + done, n);
          if (auto st = exchange(w); !st.ok()) return st;
          done += n;
        }
        return absl::OkStatus();
      });
    }
    if (!write_status.ok()) {
      finish(/*cancel=*/true);
      AbortWrite(ref);
      return write_status;
    }
    content_v1::WriteContentRequest commit;
    commit.set_action(content_v1::COMMIT);
    commit.set_ref(ref);
    // The current offset, not 0: containerd truncates the ingest when a message says offset 0.
    commit.set_offset(desc.size);
    commit.set_total(desc.size);
    commit.set_expected(desc.digest.ToString());
    for (const auto& [k, v] : labels) (*commit.mutable_labels())[k] = v;
    absl::Status st = exchange(commit);
    if (st.ok()) st = finish(/*cancel=*/false);
    if (absl::IsAlreadyExists(st)) return SetContentLabels(desc.digest, labels);
    if (!st.ok()) AbortWrite(ref);
    return st;
  }

  absl::StatusOr<ImageRecord> GetImage(const std::string& name) override {
    images_v1::GetImageRequest req;
    req.set_name(name);
    images_v1::GetImageResponse resp;
    auto ctx = Context();
    if (auto st = FromGrpc(images_->Get(ctx.get(), req, &resp), "Images.Get " + name); !st.ok()) {
      return st;
    }
    ImageRecord out;
    out.name = resp.image().name();
    const auto& t = resp.image().target();
    out.target.media_type = t.media_type();
    if (auto d = Digest::Parse(t.digest()); d.ok()) out.target.digest = *d;
    out.target.size = t.size();
    out.labels = Labels(resp.image().labels().begin(), resp.image().labels().end());
    return out;
  }

  absl::Status PutImage(const ImageRecord& image) override {
    images_v1::Image proto;
    proto.set_name(image.name);
    ToProto(image.target, proto.mutable_target());
    proto.mutable_target()->clear_annotations();
    for (const auto& [k, v] : image.labels) (*proto.mutable_labels())[k] = v;
    {
      images_v1::CreateImageRequest req;
      *req.mutable_image() = proto;
      images_v1::CreateImageResponse resp;
      auto ctx = Context();
      absl::Status st =
          FromGrpc(images_->Create(ctx.get(), req, &resp), "Images.Create " + image.name);
      if (!absl::IsAlreadyExists(st)) return st;
    }
    // The name exists (an earlier pull of the tag): point it at what was pulled now, as
    // containerd's client does.
    images_v1::UpdateImageRequest req;
    *req.mutable_image() = proto;
    req.mutable_update_mask()->add_paths("target");
    for (const auto& [k, v] : image.labels) req.mutable_update_mask()->add_paths("labels." + k);
    images_v1::UpdateImageResponse resp;
    auto ctx = Context();
    return FromGrpc(images_->Update(ctx.get(), req, &resp), "Images.Update " + image.name);
  }

  absl::StatusOr<std::vector<Mount>> Prepare(const std::string& snapshotter, const std::string& key,
                                             const std::string& parent,
                                             const Labels& labels) override {
    snapshots_v1::PrepareSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    req.set_parent(parent);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    snapshots_v1::PrepareSnapshotResponse resp;
    auto ctx = Context();
    if (auto st = FromGrpc(snapshots_->Prepare(ctx.get(), req, &resp),
                           fmt::format("Snapshots.Prepare ({})", snapshotter));
        !st.ok()) {
      return st;
    }
    std::vector<Mount> mounts;
    for (const auto& m : resp.mounts()) {
      mounts.push_back(
          {m.type(), m.source(), m.target(), {m.options().begin(), m.options().end()}});
    }
    return mounts;
  }

  absl::Status Commit(const std::string& snapshotter, const std::string& name,
                      const std::string& key, const Labels& labels) override {
    snapshots_v1::CommitSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_name(name);
    req.set_key(key);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    google::protobuf::Empty resp;
    auto ctx = Context();
    return FromGrpc(snapshots_->Commit(ctx.get(), req, &resp),
                    fmt::format("Snapshots.Commit ({})", snapshotter));
  }

  absl::StatusOr<Labels> Stat(const std::string& snapshotter, const std::string& key) override {
    snapshots_v1::StatSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    snapshots_v1::StatSnapshotResponse resp;
    auto ctx = Context();
    absl::Status st = FromGrpc(snapshots_->Stat(ctx.get(), req, &resp),
                               fmt::format("Snapshots.Stat ({})", snapshotter));
    if (!st.ok()) return st;
    Labels labels;
    for (const auto& [k, v] : resp.info().labels()) labels[k] = v;
    return labels;
  }

  absl::Status Remove(const std::string& snapshotter, const std::string& key) override {
    snapshots_v1::RemoveSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    google::protobuf::Empty resp;
    auto ctx = Context();
    return FromGrpc(snapshots_->Remove(ctx.get(), req, &resp),
                    fmt::format("Snapshots.Remove ({})", snapshotter));
  }

  absl::StatusOr<Digest> Apply(const oci::Descriptor& layer,
                               const std::vector<Mount>& mounts) override {
    diff_v1::ApplyRequest req;
    ToProto(layer, req.mutable_diff());
    for (const Mount& m : mounts) {
      auto* pm = req.add_mounts();
      pm->set_type(m.type);
      pm->set_source(m.source);
      pm->set_target(m.target);
      for (const auto& o : m.options) pm->add_options(o);
    }
    diff_v1::ApplyResponse resp;
    auto ctx = Context();
    const std::string what = fmt::format("Diff.Apply {}", layer.digest.ToString());
    if (auto st = FromGrpc(diff_->Apply(ctx.get(), req, &resp), what); !st.ok()) return st;
    auto applied = Digest::Parse(resp.applied().digest());
    if (!applied.ok()) {
      return absl::InternalError(fmt::format("containerd {}: answered a bad digest \"{}\"", what,
                                             resp.applied().digest()));
    }
    return *applied;
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context(bool with_lease = true,
                                               bool with_deadline = true) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("containerd-namespace", namespace_);
    if (with_lease && !lease_.empty()) ctx->AddMetadata("containerd-lease", lease_);
    if (with_deadline) ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return ctx;
  }

  void AbortWrite(const std::string& ref) {
    content_v1::AbortRequest req;
    req.set_ref(ref);
    google::protobuf::Empty resp;
    auto ctx = Context();
    content_->Abort(ctx.get(), req, &resp);  // best effort: containerd GCs stale ingests too
  }

  std::string address_, namespace_, lease_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<content_v1::Content::Stub> content_;
  std::unique_ptr<diff_v1::Diff::Stub> diff_;
  std::unique_ptr<images_v1::Images::Stub> images_;
  std::unique_ptr<leases_v1::Leases::Stub> leases_;
  std::unique_ptr<snapshots_v1::Snapshots::Stub> snapshots_;
};

}  // namespace

std::unique_ptr<ContainerdApi> NewGrpcContainerdApi(const std::string& address,
                                                    const std::string& namespace_name) {
  return std::make_unique<GrpcContainerdApi>(address, namespace_name);
}

}  // namespace lazypull::rpull
