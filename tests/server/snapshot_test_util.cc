#include "tests/server/snapshot_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/unique_fd.h"
#include "mount/overlay_composer.h"

namespace lazypull::testing {

SnapshotClient::SnapshotClient(const std::string& grpc_target)
    : channel_(grpc::CreateChannel(grpc_target, grpc::InsecureChannelCredentials())),
      stub_(snapshots_v1::Snapshots::NewStub(channel_)) {}

namespace {
std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("containerd-namespace", "default");
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return ctx;
}
}  // namespace

grpc::Status SnapshotClient::Prepare(const std::string& key, const std::string& parent,
                                     const LabelMap& labels, MountList* mounts) {
  snapshots_v1::PrepareSnapshotRequest req;
  req.set_snapshotter("lazypull");
  req.set_key(key);
  req.set_parent(parent);
  req.mutable_labels()->insert(labels.begin(), labels.end());
  snapshots_v1::PrepareSnapshotResponse resp;
  grpc::Status s = stub_->Prepare(Context().get(), req, &resp);
  if (mounts) mounts->assign(resp.mounts().begin(), resp.mounts().end());
  return s;
}

grpc::Status SnapshotClient::View(const std::string& key, const std::string& parent,
                                  const LabelMap& labels, MountList* mounts) {
  snapshots_v1::ViewSnapshotRequest req;
  req.set_key(key);
  req.set_parent(parent);
  req.mutable_labels()->insert(labels.begin(), labels.end());
  snapshots_v1::ViewSnapshotResponse resp;
  grpc::Status s = stub_->View(Context().get(), req, &resp);
  if (mounts) mounts->assign(resp.mounts().begin(), resp.mounts().end());
  return s;
}

grpc::Status SnapshotClient::Mounts(const std::string& key, MountList* mounts) {
  snapshots_v1::MountsRequest req;
  req.set_key(key);
  snapshots_v1::MountsResponse resp;
  grpc::Status s = stub_->Mounts(Context().get(), req, &resp);
  if (mounts) mounts->assign(resp.mounts().begin(), resp.mounts().end());
  return s;
}

grpc::Status SnapshotClient::Commit(const std::string& name, const std::string& key,
                                    const LabelMap& labels) {
  snapshots_v1::CommitSnapshotRequest req;
  req.set_name(name);
  req.set_key(key);
  req.mutable_labels()->insert(labels.begin(), labels.end());
  google::protobuf::Empty resp;
  return stub_->Commit(Context().get(), req, &resp);
}

grpc::Status SnapshotClient::Remove(const std::string& key) {
  snapshots_v1::RemoveSnapshotRequest req;
  req.set_key(key);
  google::protobuf::Empty resp;
  return stub_->Remove(Context().get(), req, &resp);
}

grpc::Status SnapshotClient::Stat(const std::string& key, snapshots_v1::Info* info) {
  snapshots_v1::StatSnapshotRequest req;
  req.set_key(key);
  snapshots_v1::StatSnapshotResponse resp;
  grpc::Status s = stub_->Stat(Context().get(), req, &resp);
  if (info) *info = resp.info();
  return s;
}

grpc::Status SnapshotClient::Update(const snapshots_v1::Info& info,
                                    const std::vector<std::string>& paths,
                                    snapshots_v1::Info* updated) {
  snapshots_v1::UpdateSnapshotRequest req;
  *req.mutable_info() = info;
  for (const std::string& p : paths) req.mutable_update_mask()->add_paths(p);
  snapshots_v1::UpdateSnapshotResponse resp;
  grpc::Status s = stub_->Update(Context().get(), req, &resp);
  if (updated) *updated = resp.info();
  return s;
}

grpc::Status SnapshotClient::List(const std::vector<std::string>& filters,
                                  std::vector<snapshots_v1::Info>* infos) {
  snapshots_v1::ListSnapshotsRequest req;
  for (const std::string& f : filters) req.add_filters(f);
  auto ctx = Context();
  std::unique_ptr<grpc::ClientReader<snapshots_v1::ListSnapshotsResponse>> reader =
      stub_->List(ctx.get(), req);
  snapshots_v1::ListSnapshotsResponse resp;
  if (infos) infos->clear();
  while (reader->Read(&resp)) {
    if (infos) infos->insert(infos->end(), resp.info().begin(), resp.info().end());
  }
  return reader->Finish();
}

grpc::Status SnapshotClient::Usage(const std::string& key, int64_t* size, int64_t* inodes) {
  snapshots_v1::UsageRequest req;
  req.set_key(key);
  snapshots_v1::UsageResponse resp;
  grpc::Status s = stub_->Usage(Context().get(), req, &resp);
  if (size) *size = resp.size();
  if (inodes) *inodes = resp.inodes();
  return s;
}

grpc::Status SnapshotClient::Cleanup() {
  snapshots_v1::CleanupRequest req;
  google::protobuf::Empty resp;
  return stub_->Cleanup(Context().get(), req, &resp);
}

namespace {

absl::Status MountOne(const ::containerd::types::Mount& m, const std::string& target) {
  std::vector<std::string> options(m.options().begin(), m.options().end());
  std::string chdir_to;
  if (m.type() == "overlay") {
    size_t total = 0;
    for (const std::string& o : options) total += o.size() + 1;
    if (total >= static_cast<size_t>(::getpagesize()) - 512) {
      chdir_to = CompactLowerdirOption(options);
    }
  }
  unsigned long flags = 0;
  std::vector<std::string> data;
  for (const std::string& o : options) {
    if (o == "ro") {
      flags |= MS_RDONLY;
    } else if (o == "rw") {
      flags &= ~static_cast<unsigned long>(MS_RDONLY);
    } else if (o == "bind") {
      flags |= MS_BIND;
    } else if (o == "rbind") {
      flags |= MS_BIND | MS_REC;
    } else {
      data.push_back(o);
    }
  }
  std::string joined = absl::StrJoin(data, ",");
  UniqueFd cwd;
  if (!chdir_to.empty()) {
    cwd.Reset(::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (::chdir(chdir_to.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("chdir ", chdir_to));
    }
  }
  int rc = ::mount(m.source().c_str(), target.c_str(), m.type().c_str(), flags,
                   joined.empty() ? nullptr : joined.c_str());
  int err = errno;
  if (cwd.valid() && ::fchdir(cwd.get()) != 0) return absl::InternalError("fchdir back");
  if (rc != 0) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("mount ", m.type(), " ", m.source(), " on ", target, " (", joined, ")"));
  }
  // A bind mount ignores MS_RDONLY on the first call; remount it read-only like containerd.
  if ((flags & MS_BIND) && (flags & MS_RDONLY)) {
    if (::mount("", target.c_str(), "", flags | MS_REMOUNT, nullptr) != 0) {
      err = errno;
      ::umount2(target.c_str(), MNT_DETACH);
      return absl::ErrnoToStatus(err, absl::StrCat("remount ro ", target));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MountAll(const MountList& mounts, const std::string& target) {
  for (const auto& m : mounts) {
    if (absl::Status s = MountOne(m, target); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Unmount(const std::string& target) {
  for (int i = 0; i < 50; ++i) {
    if (::umount2(target.c_str(), 0) == 0) return absl::OkStatus();
    if (errno != EBUSY) return absl::ErrnoToStatus(errno, absl::StrCat("umount ", target));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::ErrnoToStatus(EBUSY, absl::StrCat("umount ", target));
}

absl::StatusOr<std::unique_ptr<ScopedMount>> ScopedMount::Mount(const MountList& mounts,
                                                                const std::string& target) {
  if (absl::Status s = MountAll(mounts, target); !s.ok()) return s;
  return std::unique_ptr<ScopedMount>(new ScopedMount(target));
}

ScopedMount::~ScopedMount() {
  if (!Unmount(target_).ok()) ::umount2(target_.c_str(), MNT_DETACH);
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace lazypull::testing
