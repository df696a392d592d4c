// ImageServiceProxy: lazypull's CRI image service — kubelet's `--image-service-endpoint`
// points at lazypull's socket, and every call of `runtime.v1.ImageService` (and of the older
// `runtime.v1alpha2.ImageService`, same wire format) is forwarded to containerd's CRI plugin
// (`[cri_keychain] image_service_path`) unchanged: request and response bytes as they are,
// streaming or not, the caller's deadline and metadata, and containerd's status code, message,
// details and trailing metadata. Nothing of a request is interpreted except PullImage's image
// and AuthConfig, which go into the CriKeychain BEFORE the call is forwarded (containerd calls
// the snapshotter during the pull, and lazypull then needs them); a PullImage that fails takes
// its credentials back out (CriKeychain::Forget).
//
// Any other method on the socket answers UNIMPLEMENTED, as it did without the proxy.
// Registered on the daemon's gRPC server next to the Snapshots service
// (grpc::ServerBuilder::RegisterCallbackGenericService). The backend channel connects lazily:
// with containerd down, calls fail with containerd's channel error (UNAVAILABLE) and succeed
// once it is up.
//
// Thread-safe; calls run concurrently on gRPC's callback threads. The proxy must outlive the
// gRPC server it is registered with (the server waits for every call to finish at Shutdown).
// Logs one line per PullImage (image, code, whether credentials came with it) — never a secret.
#ifndef LAZYPULL_SERVER_CRI_IMAGE_SERVICE_PROXY_H_
#define LAZYPULL_SERVER_CRI_IMAGE_SERVICE_PROXY_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "server/cri/cri_keychain.h"

namespace lazypull::cri {

// True for the fully-qualified gRPC method names the proxy forwards
// ("/runtime.v1.ImageService/PullImage", ...).
bool IsImageServiceMethod(std::string_view method);

class ImageServiceProxy final : public grpc::CallbackGenericService {
 public:
  // `backend` is the channel to containerd's CRI (see NewBackendChannel). `keychain` is not
  // owned and must outlive the proxy.
  ImageServiceProxy(std::shared_ptr<grpc::Channel> backend, CriKeychain* keychain);
  ~ImageServiceProxy() override;

  // A channel to `target` ("unix:/run/containerd/containerd.sock") with containerd's message
  // size limits (16 MiB).
  static std::shared_ptr<grpc::Channel> NewBackendChannel(const std::string& target);

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

 private:
  class ForwardedCall;

  std::shared_ptr<grpc::Channel> backend_;
  grpc::GenericStub stub_;
  CriKeychain* const keychain_;
};

}  // namespace lazypull::cri

#endif  // LAZYPULL_SERVER_CRI_IMAGE_SERVICE_PROXY_H_
