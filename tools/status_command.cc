// `lazypull status [--root DIR] [--json]`: per-layer state of a running lazypull-snapshotter —
// backend (fuse/erofs) and whether the layer graduated to a local copy, bytes fetched,
// fetched %, cache hits — read from the status file the daemon rewrites every
// few seconds (<root>/status.json, see server/remote/remote_layer_manager.h).
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"

namespace lazypull::tools {
namespace {

struct StatusFlags {
  std::string root = "/var/lib/lazypull";
  bool json = false;
};

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f}{}", bytes, units[u])
                : fmt::format("{:.1f}{}", bytes, units[u]);
}

template <typename T>
T Field(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    return fallback;
  }
}

int RunStatus(const StatusFlags& flags) {
  const std::string path = flags.root + "/status.json";
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr,
                 "lazypull status: cannot open %s (is lazypull-snapshotter running "
                 "with --root %s?)\n",
                 path.c_str(), flags.root.c_str());
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json status = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (status.is_discarded() || !status.is_object()) {
    std::fprintf(stderr, "lazypull status: %s is not valid JSON\n", path.c_str());
    return 1;
  }
  if (flags.json) {
    std::printf("%s\n", status.dump(2).c_str());
    return 0;
  }
  std::printf("daemon pid %d, updated %s\n", Field<int>(status, "pid", 0),
              Field<std::string>(status, "updated", "?").c_str());
  if (const nlohmann::json fetch = status.value("fetch", nlohmann::json::object());
      !fetch.empty()) {
    const nlohmann::json budget =
        fetch.value("background_budget_bytes_per_second", nlohmann::json());
    std::printf(
        "background fetch budget %s/s (link estimate %s/s), on-demand fetches %llu, "
        "background requests %llu\n",
        budget.is_number() ? HumanBytes(budget.get<double>()).c_str() : "unlimited",
        HumanBytes(Field<double>(fetch, "link_bytes_per_second", 0)).c_str(),
        static_cast<unsigned long long>(Field<uint64_t>(fetch, "on_demand_fetches", 0)),
        static_cast<unsigned long long>(Field<uint64_t>(fetch, "background_requests", 0)));
  }
  if (const nlohmann::json disk = status.value("disk", nlohmann::json::object()); !disk.empty()) {
    std::printf("disk: chunk cache %s, graduated copies %s, budget %s\n",
                HumanBytes(Field<double>(disk, "cache_bytes", 0)).c_str(),
                HumanBytes(Field<double>(disk, "graduated_bytes", 0)).c_str(),
                HumanBytes(Field<double>(disk, "max_bytes", 0)).c_str());
  }
  if (const nlohmann::json mount = status.value("mount", nlohmann::json::object());
      !mount.empty()) {
    std::string line = "mount backend " + Field<std::string>(mount, "backend", "?");
    if (mount.contains("erofs_attach")) {
      line += fmt::format(", EROFS attached {}, 512-byte blocks {}, in-place graduation {}",
                          Field<std::string>(mount, "erofs_attach", "") == "loop"
                              ? "through loop devices"
                              : "file-backed",
                          Field<bool>(mount, "small_blocks", false) ? "yes" : "no",
                          Field<bool>(mount, "mount_beneath", false) ? "yes" : "no");
    }
    std::printf("%s\n", line.c_str());
  }
  std::printf("%-6s %-14s %-13s %-7s %-9s %10s %8s %10s %-10s %-7s %s\n", "SNAP", "LAYER", "FORMAT",
              "BACKEND", "GRADUATED", "FETCHED", "LOCAL%", "CACHE_HITS", "BACKGROUND", "ADOPTED",
              "REF");
  const nlohmann::json layers = status.value("layers", nlohmann::json::array());
  for (const nlohmann::json& l : layers) {
    std::string digest = Field<std::string>(l, "digest", "");
    std::string short_digest = digest.size() > 19 ? digest.substr(7, 12) : digest;
    std::printf(
        "%-6lld %-14s %-13s %-7s %-9s %10s %7.1f%% %10llu %-10s %-7s %s\n",
        static_cast<long long>(Field<int64_t>(l, "snapshot_id", 0)), short_digest.c_str(),
        Field<std::string>(l, "format", "").c_str(), Field<std::string>(l, "backend", "").c_str(),
        Field<bool>(l, "graduated", false) ? "yes" : "no",
        HumanBytes(Field<double>(l, "bytes_fetched", 0)).c_str(),
        Field<double>(l, "fetched_percent", 0),
        static_cast<unsigned long long>(Field<uint64_t>(l, "cache_hits", 0)),
        Field<std::string>(l, "background", "").c_str(),
        // Taken over from a previous daemon through the FUSE holder (issue 20).
        Field<bool>(l, "adopted", false) ? "yes" : "no", Field<std::string>(l, "ref", "").c_str());
  }
  for (const nlohmann::json& u : status.value("unavailable", nlohmann::json::array())) {
    std::printf("UNAVAILABLE snapshot %lld %s: %s\n",
                static_cast<long long>(Field<int64_t>(u, "snapshot_id", 0)),
                Field<std::string>(u, "digest", "").c_str(),
                Field<std::string>(u, "error", "").c_str());
  }
  return 0;
}

}  // namespace

void RegisterStatusCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<StatusFlags>();
  CLI::App* cmd = app.add_subcommand("status",
                                     "Per-layer state of lazily mounted layers (bytes fetched, "
                                     "fetched %, cache hits)");
  cmd->add_option("--root", flags->root, "lazypull-snapshotter root")->capture_default_str();
  cmd->add_flag("--json", flags->json, "print the raw status JSON");
  cmd->callback([flags, exit_code] { *exit_code = RunStatus(*flags); });
}

}  // namespace lazypull::tools
