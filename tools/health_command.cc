// `lazypull health [--address SOCK] [--timeout SECONDS]`: whether a lazypull-snapshotter
// answers on its gRPC socket — the liveness/readiness probe of the Helm chart's DaemonSet and a
// check for operators. It makes one real Snapshots call (Stat of a key containerd never uses,
// so it reads the metadata store): OK or NOT_FOUND means the daemon serves; anything else
// (no socket, no answer before the timeout, an internal error) is unhealthy.
//
// Exit status: 0 healthy, 1 unhealthy (the reason on stderr).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "tools/commands.h"

namespace lazypull::tools {
namespace {

namespace snapshots_v1 = ::containerd::services::snapshots::v1;

// containerd's keys are "<namespace>/<n>/<key>": no snapshot can have this name.
constexpr char kProbeKey[] = "lazypull-health-probe";

struct HealthFlags {
  std::string address = "/run/lazypull/lazypull.sock";
  double timeout_seconds = 5;
};

int RunHealth(const HealthFlags& flags) {
  const auto start = std::chrono::steady_clock::now();
  // gRPC deadlines are wall-clock time points.
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_seconds * 1000));
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix://" + flags.address, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(deadline)) {
    std::fprintf(stderr, "lazypull health: unhealthy: no connection to %s within %.1fs\n",
                 flags.address.c_str(), flags.timeout_seconds);
    return 1;
  }
  std::unique_ptr<snapshots_v1::Snapshots::Stub> stub = snapshots_v1::Snapshots::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  snapshots_v1::StatSnapshotRequest req;
  req.set_key(kProbeKey);
  snapshots_v1::StatSnapshotResponse resp;
  grpc::Status s = stub->Stat(&ctx, req, &resp);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
    std::fprintf(stderr, "lazypull health: unhealthy: %s answered Stat with code %d: %s\n",
                 flags.address.c_str(), static_cast<int>(s.error_code()),
                 s.error_message().c_str());
    return 1;
  }
  std::printf("ok: %s answered in %.1f ms\n", flags.address.c_str(), ms);
  return 0;
}

}  // namespace

void RegisterHealthCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<HealthFlags>();
  CLI::App* cmd = app.add_subcommand(
      "health", "Check that lazypull-snapshotter answers on its gRPC socket (exit 0 = healthy)");
  cmd->add_option("--address", flags->address, "gRPC unix socket of the daemon")
      ->capture_default_str();
  cmd->add_option("--timeout", flags->timeout_seconds, "seconds to wait for an answer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([flags, exit_code] { *exit_code = RunHealth(*flags); });
}

}  // namespace lazypull::tools
