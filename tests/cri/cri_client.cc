#include "tests/cri/cri_client.h"

#include <thread>

#include "absl/strings/str_split.h"
#include "fmt/format.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

std::shared_ptr<grpc::Channel> Channel(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
}

void SetTimeout(grpc::ClientContext* ctx, std::chrono::seconds timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

absl::Status CallError(const std::string& call, const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      fmt::format("CRI {}: {}", call, s.error_message()));
}

}  // namespace

runtime::v1::AuthConfig BasicAuth(const std::string& user, const std::string& password) {
  runtime::v1::AuthConfig a;
  a.set_username(user);
  a.set_password(password);
  return a;
}

absl::StatusOr<std::string> ParseCriLog(const std::string& log) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
    if (parts.size() < 3 || (parts[2] != "F" && parts[2] != "P")) {
      return absl::InvalidArgumentError(
          fmt::format("malformed CRI log line: {}", std::string(line)));
    }
    if (parts.size() == 4) out.append(parts[3].data(), parts[3].size());
    if (parts[2] == "F") out += '\n';
  }
  return out;
}

CriClient::CriClient(const std::string& image_endpoint, const std::string& runtime_endpoint)
    : images_(runtime::v1::ImageService::NewStub(Channel(image_endpoint))),
      runtime_(runtime::v1::RuntimeService::NewStub(Channel(runtime_endpoint))) {}

grpc::Status CriClient::PullImage(const std::string& image,
                                  const std::optional<runtime::v1::AuthConfig>& auth,
                                  std::string* image_ref, std::chrono::seconds timeout) {
  runtime::v1::PullImageRequest req;
  req.mutable_image()->set_image(image);
  if (auth) *req.mutable_auth() = *auth;
  runtime::v1::PullImageResponse resp;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, timeout);
  grpc::Status s = images_->PullImage(&ctx, req, &resp);
  if (s.ok() && image_ref != nullptr) *image_ref = resp.image_ref();
  return s;
}

grpc::Status CriClient::ImageStatus(const std::string& image,
                                    runtime::v1::ImageStatusResponse* response) {
  runtime::v1::ImageStatusRequest req;
  req.mutable_image()->set_image(image);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, std::chrono::seconds(30));
  return images_->ImageStatus(&ctx, req, response);
}

grpc::Status CriClient::ListImages(runtime::v1::ListImagesResponse* response) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, std::chrono::seconds(30));
  return images_->ListImages(&ctx, runtime::v1::ListImagesRequest(), response);
}

grpc::Status CriClient::RemoveImage(const std::string& image) {
  runtime::v1::RemoveImageRequest req;
  req.mutable_image()->set_image(image);
  runtime::v1::RemoveImageResponse resp;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, std::chrono::seconds(60));
  return images_->RemoveImage(&ctx, req, &resp);
}

grpc::Status CriClient::ImageFsInfo(runtime::v1::ImageFsInfoResponse* response) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, std::chrono::seconds(30));
  return images_->ImageFsInfo(&ctx, runtime::v1::ImageFsInfoRequest(), response);
}

grpc::Status CriClient::Version(runtime::v1::VersionResponse* response) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, std::chrono::seconds(30));
  runtime::v1::VersionRequest req;
  req.set_version("v1");
  return runtime_->Version(&ctx, req, response);
}

absl::StatusOr<ContainerRun> CriClient::RunContainer(
    const std::string& name, const std::string& image, const std::vector<std::string>& command,
    const std::string& log_dir, std::chrono::seconds timeout,
    const std::function<void(const std::string&)>& while_running) {
  runtime::v1::PodSandboxConfig pod;
  pod.mutable_metadata()->set_name(name);
  pod.mutable_metadata()->set_uid(name + "-uid");
  pod.mutable_metadata()->set_namespace_("lazypull-test");
  pod.set_log_directory(log_dir);
  // Host network: containerd sets up no CNI network for the pod. No hostname, as kubelet does
  // for host-network pods (the pod shares the node's UTS namespace; runc refuses to set one).
  pod.mutable_linux()->mutable_security_context()->mutable_namespace_options()->set_network(
      runtime::v1::NODE);

  std::string sandbox_id;
  {
    runtime::v1::RunPodSandboxRequest req;
    *req.mutable_config() = pod;
    runtime::v1::RunPodSandboxResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, timeout);
    grpc::Status s = runtime_->RunPodSandbox(&ctx, req, &resp);
    if (!s.ok()) return CallError("RunPodSandbox", s);
    sandbox_id = resp.pod_sandbox_id();
  }
  // Always tear the pod down, whatever happens below.
  struct PodCleanup {
    runtime::v1::RuntimeService::Stub* runtime;
    std::string id;
    ~PodCleanup() {
      for (int i = 0; i < 2; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        if (i == 0) {
          runtime::v1::StopPodSandboxRequest req;
          req.set_pod_sandbox_id(id);
          runtime::v1::StopPodSandboxResponse resp;
          (void)runtime->StopPodSandbox(&ctx, req, &resp);
        } else {
          runtime::v1::RemovePodSandboxRequest req;
          req.set_pod_sandbox_id(id);
          runtime::v1::RemovePodSandboxResponse resp;
          (void)runtime->RemovePodSandbox(&ctx, req, &resp);
        }
      }
    }
  } cleanup{runtime_.get(), sandbox_id};

  const std::string log_path = name + ".log";
  std::string container_id;
  {
    runtime::v1::CreateContainerRequest req;
    req.set_pod_sandbox_id(sandbox_id);
    runtime::v1::ContainerConfig* c = req.mutable_config();
    c->mutable_metadata()->set_name(name);
    c->mutable_image()->set_image(image);
    for (const std::string& arg : command) c->add_command(arg);
    c->set_log_path(log_path);
    *req.mutable_sandbox_config() = pod;
    runtime::v1::CreateContainerResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, timeout);
    grpc::Status s = runtime_->CreateContainer(&ctx, req, &resp);
    if (!s.ok()) return CallError("CreateContainer", s);
    container_id = resp.container_id();
  }
  {
    runtime::v1::StartContainerRequest req;
    req.set_container_id(container_id);
    runtime::v1::StartContainerResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, timeout);
    grpc::Status s = runtime_->StartContainer(&ctx, req, &resp);
    if (!s.ok()) return CallError("StartContainer", s);
  }
  if (while_running) {
    while_running(container_id);
    runtime::v1::StopContainerRequest req;
    req.set_container_id(container_id);
    req.set_timeout(0);
    runtime::v1::StopContainerResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, timeout);
    grpc::Status s = runtime_->StopContainer(&ctx, req, &resp);
    if (!s.ok()) return CallError("StopContainer", s);
  }
  ContainerRun run;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    runtime::v1::ContainerStatusRequest req;
    req.set_container_id(container_id);
    runtime::v1::ContainerStatusResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, std::chrono::seconds(30));
    grpc::Status s = runtime_->ContainerStatus(&ctx, req, &resp);
    if (!s.ok()) return CallError("ContainerStatus", s);
    if (resp.status().state() == runtime::v1::CONTAINER_EXITED) {
      run.exit_code = resp.status().exit_code();
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          fmt::format("container {} did not exit within {} s", name, timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // containerd writes the log before it reports the container exited (it waits for the IO).
  absl::StatusOr<std::string> log = ReadFile(log_dir + "/" + log_path);
  if (!log.ok()) return log.status();
  absl::StatusOr<std::string> text = ParseCriLog(*log);
  if (!text.ok()) return text.status();
  run.output = *text;
  {
    runtime::v1::RemoveContainerRequest req;
    req.set_container_id(container_id);
    runtime::v1::RemoveContainerResponse resp;
    grpc::ClientContext ctx;
    SetTimeout(&ctx, std::chrono::seconds(60));
    grpc::Status s = runtime_->RemoveContainer(&ctx, req, &resp);
    if (!s.ok()) return CallError("RemoveContainer", s);
  }
  return run;
}

}  // namespace lazypull::testing
