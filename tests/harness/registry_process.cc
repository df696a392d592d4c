#include "tests/harness/registry_process.h"

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::testing {

std::string RegistryProcess::host() const { return fmt::format("127.0.0.1:{}", port_); }

absl::StatusOr<std::unique_ptr<RegistryProcess>> RegistryProcess::Start(const std::string& work_dir,
                                                                        RegistryOptions options) {
  std::unique_ptr<RegistryProcess> reg(new RegistryProcess());
  reg->work_dir_ = work_dir;
  reg->port_ = PickFreePort();
  std::string auth;
  if (options.basic_user) {
    auto r =
        RunCommand({"htpasswd", "-Bbn", options.basic_user->first, options.basic_user->second});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError("htpasswd failed: " + r->output);
    auto st = WriteFile(work_dir + "/htpasswd", r->output);
    if (!st.ok()) return st;
    auth = fmt::format("auth:\n  htpasswd:\n    realm: lazypull-test\n    path: {}/htpasswd\n",
                       work_dir);
    reg->basic_user_ = options.basic_user;
  } else if (options.token) {
    auth = fmt::format(
        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n"
        "    rootcertbundle: {}\n",
        options.token->realm, options.token->service, options.token->issuer,
        options.token->root_cert_bundle_path);
  }
  reg->storage_dir_ = options.storage_dir.empty() ? work_dir + "/storage" : options.storage_dir;
  std::string config = fmt::format(
      "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
      "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{}"
      "http:\n  addr: 127.0.0.1:{}\n{}",
      reg->storage_dir_,
      options.read_only ? "  maintenance:\n    readonly:\n      enabled: true\n" : "", reg->port_,
      auth);
  if (!options.proxy_remote_url.empty()) {
    config += fmt::format("proxy:\n  remoteurl: {}\n", options.proxy_remote_url);
  }
  auto st = WriteFile(work_dir + "/config.yml", config);
  if (!st.ok()) return st;
  auto proc = Subprocess::Start({"docker-registry", "serve", work_dir + "/config.yml"},
                                work_dir + "/registry.log");
  if (!proc.ok()) return proc.status();
  reg->process_ = std::move(*proc);
  st = WaitForTcp(reg->port_, std::chrono::seconds(20));
  if (!st.ok()) {
    return absl::UnavailableError("docker-registry did not start: " + reg->process_.ReadLog());
  }
  return reg;
}

absl::Status RegistryProcess::PushOciLayout(const std::string& layout, const std::string& tag,
                                            const std::string& repo_and_tag,
                                            const std::string& extra) {
  std::string creds;
  if (basic_user_)
    creds = fmt::format("--dest-creds '{}:{}'", basic_user_->first, basic_user_->second);
  std::string cmd = fmt::format(
      "skopeo --insecure-policy copy --dest-tls-verify=false {} {} oci:{}:{} docker://{}/{} 2>&1",
      creds, extra, layout, tag, host(), repo_and_tag);
  auto r = RunShell(cmd);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("skopeo push failed: " + r->output);
  return absl::OkStatus();
}

}  // namespace lazypull::testing
