// CriClient: a small Kubernetes CRI (runtime.v1) client for tests, over lazypull's protos
// (proto/k8s/cri/runtime/v1/api.proto). It does what kubelet does for one pod: pull the image
// (with an AuthConfig, as kubelet passes an image pull secret), then run one container in a
// host-network pod sandbox and read its output from the CRI log file.
//
// Image calls go to `image_endpoint` (lazypull's socket with the CRI keychain, or containerd's
// own for comparison) and runtime calls to `runtime_endpoint` (containerd), exactly like
// kubelet's --image-service-endpoint / --container-runtime-endpoint. Image calls return the
// gRPC status as is, so tests can compare codes and messages. Thread-compatible.
#ifndef LAZYPULL_TESTS_CRI_CRI_CLIENT_H_
#define LAZYPULL_TESTS_CRI_CRI_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "k8s/cri/runtime/v1/api.grpc.pb.h"

namespace lazypull::testing {

// What a container printed and how it ended.
struct ContainerRun {
  std::string output;  // stdout and stderr lines, in log order, each with its "\n"
  int exit_code = -1;
};

class CriClient {
 public:
  // Endpoints are unix socket paths.
  CriClient(const std::string& image_endpoint, const std::string& runtime_endpoint);

  // runtime.v1.ImageService. `image_ref` receives PullImageResponse.image_ref.
  grpc::Status PullImage(const std::string& image,
                         const std::optional<runtime::v1::AuthConfig>& auth,
                         std::string* image_ref = nullptr,
                         std::chrono::seconds timeout = std::chrono::seconds(300));
  grpc::Status ImageStatus(const std::string& image, runtime::v1::ImageStatusResponse* response);
  grpc::Status ListImages(runtime::v1::ListImagesResponse* response);
  grpc::Status RemoveImage(const std::string& image);
  grpc::Status ImageFsInfo(runtime::v1::ImageFsInfoResponse* response);

  // runtime.v1.RuntimeService.Version through the runtime endpoint.
  grpc::Status Version(runtime::v1::VersionResponse* response);

  // Runs `command` from `image` (already pulled) in a fresh host-network pod sandbox whose logs
  // go under `log_dir`, waits (up to `timeout`) for it to exit, reads its CRI log, then removes
  // the container and the sandbox. `name` makes the pod unique. Errors carry the failing CRI
  // call and its status.
  //
  // With `while_running`, it is called with the container's ID once StartContainer returned
  // (so its rootfs is mounted, under containerd's state dir in io.containerd.runtime.v2.task/
  // k8s.io/<ID>/rootfs), and the container is then stopped (StopContainer, no grace period:
  // SIGKILL) before its exit is awaited — for a long-running `command` whose tree a test
  // inspects.
  absl::StatusOr<ContainerRun> RunContainer(
      const std::string& name, const std::string& image, const std::vector<std::string>& command,
      const std::string& log_dir, std::chrono::seconds timeout = std::chrono::seconds(120),
      const std::function<void(const std::string& container_id)>& while_running = nullptr);

 private:
  std::unique_ptr<runtime::v1::ImageService::Stub> images_;
  std::unique_ptr<runtime::v1::RuntimeService::Stub> runtime_;
};

// AuthConfig with username and password (the common image-pull-secret form).
runtime::v1::AuthConfig BasicAuth(const std::string& user, const std::string& password);

// Parses a CRI container log ("<RFC 3339 time> <stream> <P|F> <text>" lines): the text of every
// line, "\n" after each full (F) line. InvalidArgument for a malformed line.
absl::StatusOr<std::string> ParseCriLog(const std::string& log);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_CRI_CRI_CLIENT_H_
