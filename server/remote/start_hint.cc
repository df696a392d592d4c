#include "server/remote/start_hint.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace lazypull::remote {

namespace {

// runc's (and Docker's) PATH when the image sets none.
constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::vector<std::string> Strings(const nlohmann::json& j) {
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const auto& v : j) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

startup::StartHint StartHintFromConfig(const oci::ImageConfig& config) {
  startup::StartHint hint;
  hint.files = {"/etc/passwd", "/etc/group"};
  const nlohmann::json& doc = config.json();
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& c =
      doc.contains("config") && doc["config"].is_object() ? doc["config"] : empty;
  std::vector<std::string> argv = Strings(c.value("Entrypoint", nlohmann::json()));
  std::vector<std::string> cmd = Strings(c.value("Cmd", nlohmann::json()));
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  if (argv.empty() || argv[0].empty()) return hint;
  const std::string& name = argv[0];
  hint.args.assign(argv.begin() + 1, argv.end());
  std::string dir = c.value("WorkingDir", std::string("/"));
  if (dir.empty() || dir.front() != '/') dir = "/";
  hint.working_dir = dir;
  if (absl::StrContains(name, '/')) {
    hint.executables.push_back(name.front() == '/' ? name : absl::StrCat(dir, "/", name));
    return hint;
  }
  std::string path = kDefaultPath;
  for (const std::string& env : Strings(c.value("Env", nlohmann::json()))) {
    if (absl::StartsWith(env, "PATH=")) path = env.substr(5);
  }
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    if (!absl::StartsWith(dir, "/")) continue;  // exec ignores what a relative PATH would find
    hint.executables.push_back(std::string(dir) + "/" + name);
  }
  return hint;
}

}  // namespace lazypull::remote
