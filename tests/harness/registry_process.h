// RegistryProcess: a real Debian `docker-registry` (distribution v2) on 127.0.0.1 with its own
// storage in a temp dir, stopped by PID when the object dies.
#ifndef LAZYPULL_TESTS_HARNESS_REGISTRY_PROCESS_H_
#define LAZYPULL_TESTS_HARNESS_REGISTRY_PROCESS_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {

struct RegistryOptions {
  // htpasswd Basic auth with this one user (bcrypt entry written by `htpasswd -Bbn`).
  std::optional<std::pair<std::string, std::string>> basic_user;
  // Bearer token auth: realm URL of a token server, service, issuer, and the PEM cert bundle
  // that signs its tokens.
  struct Token {
    std::string realm, service, issuer, root_cert_bundle_path;
  };
  std::optional<Token> token;
  // Serve this storage directory (e.g. another registry's `storage_dir()`) instead of
  // <work_dir>/storage, read-only when `read_only` — the same images behind other auth.
  std::string storage_dir;
  bool read_only = false;
  // Pull-through cache mode (distribution's `proxy: remoteurl:`): serves the registry at this
  // URL, storing each blob it is asked for (in the background, after the first request).
  std::string proxy_remote_url;
};

class RegistryProcess {
 public:
  // Starts the registry in `work_dir` (config, storage and log live there) and waits until
  // GET /v2/ answers.
  static absl::StatusOr<std::unique_ptr<RegistryProcess>> Start(const std::string& work_dir,
                                                                RegistryOptions options = {});
  ~RegistryProcess() = default;

  int port() const { return port_; }
  // "127.0.0.1:PORT"
  std::string host() const;
  std::string storage_dir() const { return storage_dir_; }
  // Pushes an OCI image layout tag with skopeo: oci:LAYOUT:TAG → docker://host/REPO:TAG_OUT.
  // `extra` is inserted into the skopeo command line (e.g. "--dest-compress-format zstd").
  absl::Status PushOciLayout(const std::string& layout, const std::string& tag,
                             const std::string& repo_and_tag, const std::string& extra = "");
  std::string ReadLog() const { return process_.ReadLog(); }
  Subprocess& process() { return process_; }

 private:
  RegistryProcess() = default;
  int port_ = 0;
  std::string work_dir_;
  std::string storage_dir_;
  std::optional<std::pair<std::string, std::string>> basic_user_;
  Subprocess process_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_REGISTRY_PROCESS_H_
