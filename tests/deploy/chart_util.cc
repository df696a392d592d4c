#include "tests/deploy/chart_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {

std::string ChartDir() { return SourceDir() + "/charts/lazypull"; }

absl::StatusOr<CommandResult> RunHelmRender(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryDir() + "/bin/lazypull-helmrender"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, std::chrono::seconds(60));
}

absl::StatusOr<nlohmann::json> RenderChart(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"--chart", ChartDir(), "--output", "json"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> r = RunHelmRender(argv);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InvalidArgumentError(r->output);
  nlohmann::json objects = nlohmann::json::parse(r->output, nullptr, false);
  if (!objects.is_array()) {
    return absl::InternalError("helmrender printed no JSON array:\n" + r->output);
  }
  return objects;
}

nlohmann::json FindObject(const nlohmann::json& objects, const std::string& kind,
                          const std::string& name) {
  for (const nlohmann::json& o : objects) {
    if (o.value("kind", "") == kind && (name.empty() || o["metadata"].value("name", "") == name)) {
      return o;
    }
  }
  return nullptr;
}

absl::StatusOr<std::string> ValidateWithKubernetesModels(const nlohmann::json& objects) {
  const std::string dir = BinaryDir() + "/deploy/k8s-validate";
  const std::string src = SourceDir() + "/tests/deploy/k8s-validate";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (const char* f : {"package.json", "validate.mjs"}) {
    std::filesystem::copy_file(src + "/" + f, dir + "/" + f,
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copy ", f, ": ", ec.message()));
  }
  {
    // One npm install per build dir, even with test binaries running in parallel.
    int lock = ::open((dir + "/.lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    ::flock(lock, LOCK_EX);
    absl::StatusOr<CommandResult> install =
        RunShell("cd " + dir +
                     " && { test -d node_modules/kubernetes-models || "
                     "npm install --no-audit --no-fund --loglevel=error; }",
                 std::chrono::seconds(300));
    ::flock(lock, LOCK_UN);
    ::close(lock);
    if (!install.ok()) return install.status();
    if (install->exit_code != 0) {
      return absl::UnavailableError("npm install of kubernetes-models failed:\n" + install->output);
    }
  }
  if (absl::Status s = WriteFile(dir + "/objects.json", objects.dump()); !s.ok()) return s;
  absl::StatusOr<CommandResult> r =
      RunShell("cd " + dir + " && node validate.mjs < objects.json", std::chrono::seconds(120));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InvalidArgumentError(r->output);
  return r->output;
}

absl::StatusOr<std::map<std::string, std::string>> KubeletEnv(const nlohmann::json& container) {
  std::map<std::string, std::string> env;
  for (const nlohmann::json& e : container.value("env", nlohmann::json::array())) {
    const std::string name = e["name"];
    if (e.contains("value")) {
      env[name] = e["value"];
    } else if (e.contains("valueFrom") && e["valueFrom"].contains("fieldRef")) {
      const std::string field = e["valueFrom"]["fieldRef"]["fieldPath"];
      if (field != "status.hostIP" && field != "status.podIP") {
        return absl::UnimplementedError(absl::StrCat("env ", name, ": fieldRef ", field));
      }
      env[name] = "127.0.0.1";
    } else {
      return absl::UnimplementedError(absl::StrCat("env ", name, ": ", e.dump()));
    }
  }
  return env;
}

std::string ExpandKubeletVars(std::string arg, const std::map<std::string, std::string>& env) {
  for (const auto& [name, value] : env) {
    const std::string ref = "$(" + name + ")";
    for (size_t pos = arg.find(ref); pos != std::string::npos; pos = arg.find(ref, pos)) {
      arg.replace(pos, ref.size(), value);
      pos += value.size();
    }
  }
  return arg;
}

}  // namespace lazypull::testing
