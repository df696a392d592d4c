// Test helpers for the snapshotter daemon: a gRPC client over the real unix socket and real
// mount(2)/umount2(2) of the Mounts the daemon returns (shortening long overlay lowerdir
// options the way containerd's mount.All does).
#ifndef LAZYPULL_TESTS_SERVER_SNAPSHOT_TEST_UTIL_H_
#define LAZYPULL_TESTS_SERVER_SNAPSHOT_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"

namespace lazypull::testing {

namespace snapshots_v1 = ::containerd::services::snapshots::v1;
using MountList = std::vector<::containerd::types::Mount>;
using LabelMap = std::map<std::string, std::string>;

// Thin synchronous client; each call returns the raw grpc::Status so tests can assert codes.
class SnapshotClient {
 public:
  explicit SnapshotClient(const std::string& grpc_target);

  grpc::Status Prepare(const std::string& key, const std::string& parent,
                       const LabelMap& labels = {}, MountList* mounts = nullptr);
  grpc::Status View(const std::string& key, const std::string& parent, const LabelMap& labels = {},
                    MountList* mounts = nullptr);
  grpc::Status Mounts(const std::string& key, MountList* mounts);
  grpc::Status Commit(const std::string& name, const std::string& key, const LabelMap& labels = {});
  grpc::Status Remove(const std::string& key);
  grpc::Status Stat(const std::string& key, snapshots_v1::Info* info);
  grpc::Status Update(const snapshots_v1::Info& info, const std::vector<std::string>& paths,
                      snapshots_v1::Info* updated);
  grpc::Status List(const std::vector<std::string>& filters,
                    std::vector<snapshots_v1::Info>* infos);
  grpc::Status Usage(const std::string& key, int64_t* size, int64_t* inodes);
  grpc::Status Cleanup();

  snapshots_v1::Snapshots::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<snapshots_v1::Snapshots::Stub> stub_;
};

// Mounts every entry of `mounts` on `target` (in order), with containerd's option handling:
// "ro"/"rw"/"bind"/"rbind" become flags, the rest mount data; an overlay whose options do not
// fit in a page is mounted from the lowerdirs' common parent with relative lowerdirs.
absl::Status MountAll(const MountList& mounts, const std::string& target);

// Unmounts `target` (retrying briefly on EBUSY).
absl::Status Unmount(const std::string& target);

// RAII: unmounts on destruction.
class ScopedMount {
 public:
  static absl::StatusOr<std::unique_ptr<ScopedMount>> Mount(const MountList& mounts,
                                                            const std::string& target);
  ~ScopedMount();
  const std::string& target() const { return target_; }

 private:
  explicit ScopedMount(std::string target) : target_(std::move(target)) {}
  std::string target_;
};

// Names of the entries of `dir` (no "." / ".."), sorted.
std::vector<std::string> ListDir(const std::string& dir);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_SERVER_SNAPSHOT_TEST_UTIL_H_
