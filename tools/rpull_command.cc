// `lazypull rpull [--address SOCK] [--namespace NS] [--snapshotter NAME] [--plain-http]
//  [--platform P] [--user U[:P]] [--config FILE] REF`: pulls REF into containerd so that
// layers the snapshotter can serve lazily are mounted from the registry instead of downloaded
// (tools/rpull/image_puller.h). Flag names follow `ctr` (and CONTAINERD_ADDRESS /
// CONTAINERD_NAMESPACE likewise).
//
// The registry is read with the daemon's [registry] settings (hosts.toml, auths, docker
// config) from --config; --plain-http and --user add to them for this pull.
//
// Exit status: 0 pulled; 1 with a one-line error on stderr otherwise.
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

#include "base/logging.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/registry_client.h"
#include "fetcher/registry/registry_config.h"
#include "fmt/format.h"
#include "toml++/toml.h"
#include "tools/commands.h"
#include "tools/rpull/containerd_api.h"
#include "tools/rpull/image_puller.h"
#include "tools/rpull/pull_progress.h"

namespace lazypull::tools {
namespace {

struct RpullFlags {
  std::string address = "/run/containerd/containerd.sock";
  std::string namespace_name = "default";
  std::string snapshotter = "lazypull";
  bool plain_http = false;
  std::string platform;
  std::string user;
  std::string config = "/etc/lazypull/config.toml";
  bool config_set = false;
  std::string ref;
};

// The password of `--user NAME` without ":PASSWORD", read like ctr does: prompted on a
// terminal without echo, else one line of stdin.
std::string ReadPassword() {
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  termios old{};
  if (tty) {
    std::fprintf(stderr, "Password: ");
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::fprintf(stderr, "\n");
  }
  return line;
}

absl::StatusOr<registry::RegistryConfig> LoadRegistryConfig(const RpullFlags& flags) {
  std::error_code ec;
  if (!std::filesystem::exists(flags.config, ec)) {
    // The default file is optional (a daemon may run on built-in defaults); a named one not.
    if (flags.config_set) {
      return absl::NotFoundError(fmt::format("config file {} does not exist", flags.config));
    }
    return registry::RegistryConfig{};
  }
  toml::table doc;
  try {
    doc = toml::parse_file(flags.config);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(fmt::format("{}:{}:{}: {}", flags.config,
                                                  e.source().begin.line, e.source().begin.column,
                                                  e.description()));
  }
  const toml::table* section = doc["registry"].as_table();
  if (section == nullptr) return registry::RegistryConfig{};
  auto config = registry::ParseRegistryConfig(*section);
  if (!config.ok()) {
    return absl::Status(
        config.status().code(),
        fmt::format("{}: {}", flags.config, std::string(config.status().message())));
  }
  return config;
}

absl::Status RunRpull(const RpullFlags& flags, bool tty) {
  const auto t0 = std::chrono::steady_clock::now();
  auto ref = registry::ParseReference(flags.ref);
  if (!ref.ok()) return ref.status();
  rpull::PullOptions options;
  options.snapshotter = flags.snapshotter;
  if (!flags.platform.empty()) {
    auto p = oci::ParsePlatform(flags.platform);
    if (!p.ok()) return p.status();
    options.platform = *p;
  }
  auto config = LoadRegistryConfig(flags);
  if (!config.ok()) return config.status();
  if (flags.plain_http) config->plain_http.insert(ref->host);
  if (!flags.user.empty()) {
    registry::HostCredentials creds;
    const size_t colon = flags.user.find(':');
    creds.username = flags.user.substr(0, colon);
    creds.password = colon == std::string::npos ? ReadPassword() : flags.user.substr(colon + 1);
    config->auths[ref->host] = std::move(creds);
  }
  registry::RegistryClient registry(std::move(*config), registry::NewCurlTransport());

  std::unique_ptr<rpull::ContainerdApi> containerd =
      rpull::NewGrpcContainerdApi(flags.address, flags.namespace_name);
  if (auto st = containerd->Connect(std::chrono::seconds(5)); !st.ok()) return st;

  rpull::PullProgress progress(stdout, tty);
  auto result = rpull::PullImage(*containerd, registry, *ref, options, &progress);
  if (!result.ok()) return result.status();
  progress.PrintSummary(
      *result, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return absl::OkStatus();
}

}  // namespace

void RegisterRpullCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<RpullFlags>();
  CLI::App* cmd = app.add_subcommand(
      "rpull", "Pull an image into containerd, mounting lazily what the snapshotter can");
  cmd->add_option("-a,--address", flags->address, "containerd's gRPC socket")
      ->envname("CONTAINERD_ADDRESS")
      ->capture_default_str();
  cmd->add_option("-n,--namespace", flags->namespace_name, "containerd namespace")
      ->envname("CONTAINERD_NAMESPACE")
      ->capture_default_str();
  cmd->add_option("--snapshotter", flags->snapshotter,
                  "snapshotter name in containerd's config (the proxy plugin)")
      ->capture_default_str();
  cmd->add_flag("--plain-http", flags->plain_http, "reach the registry over plain HTTP");
  cmd->add_option("--platform", flags->platform, "platform of an index to pull (default: host)");
  cmd->add_option("-u,--user", flags->user, "registry credentials USER[:PASSWORD]");
  cmd->add_option("--config", flags->config,
                  "lazypull config whose [registry] section to use (hosts, auths)")
      ->capture_default_str();
  cmd->add_option("ref", flags->ref, "image reference (HOST[:PORT]/REPO[:TAG|@DIGEST])")
      ->required();
  cmd->callback([flags, cmd, exit_code, &app] {
    flags->config_set = cmd->count("--config") > 0;
    // A command-line client reports its outcome itself (progress lines, one error line); the
    // fetcher's JSON warnings (e.g. each retry) are shown only when asked for.
    if (app.count("--log-level") == 0) SetLogLevel(LogLevel::kError);
    absl::Status st = RunRpull(*flags, ::isatty(STDOUT_FILENO) != 0);
    if (!st.ok()) {
      // One line: containerd's and the registry's messages can hold newlines.
      std::string msg(st.message());
      for (char& c : msg) {
        if (c == '\n') c = ' ';
      }
      std::fprintf(stderr, "lazypull rpull: %s: %s (%s)\n", flags->ref.c_str(), msg.c_str(),
                   absl::StatusCodeToString(st.code()).c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace lazypull::tools
