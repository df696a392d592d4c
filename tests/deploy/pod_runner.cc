#include "tests/deploy/pod_runner.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/deploy/chart_util.h"
#include "tests/deploy/node_sandbox.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

nlohmann::json ByName(const nlohmann::json& list, const std::string& name) {
  for (const nlohmann::json& e : list) {
    if (e.value("name", "") == name) return e;
  }
  return nullptr;
}

// The kubelet's hostPath type checks (and DirectoryOrCreate's creation).
absl::Status CheckHostPath(const std::string& path, const std::string& type) {
  struct stat st;
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (type == "DirectoryOrCreate") {
    if (!exists) {
      std::error_code ec;
      fs::create_directories(path, ec);
      if (ec)
        return absl::InternalError(absl::StrCat("create hostPath ", path, ": ", ec.message()));
      ::chmod(path.c_str(), 0755);
      return absl::OkStatus();
    }
    if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(path + " is not a directory");
    return absl::OkStatus();
  }
  if (!exists) return absl::FailedPreconditionError("hostPath " + path + " does not exist");
  if ((type == "Directory" && !S_ISDIR(st.st_mode)) ||
      (type == "CharDevice" && !S_ISCHR(st.st_mode)) ||
      (type == "Socket" && !S_ISSOCK(st.st_mode)) || (type == "File" && !S_ISREG(st.st_mode))) {
    return absl::FailedPreconditionError(absl::StrCat("hostPath ", path, " is not a ", type));
  }
  return absl::OkStatus();
}

// Writes a configMap/secret volume's files: every key, or the `items` (key → path).
absl::Status WriteVolumeFiles(const std::string& dir, const nlohmann::json& data,
                              const nlohmann::json& items) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (items.is_array()) {
    for (const nlohmann::json& item : items) {
      const std::string key = item["key"];
      if (!data.contains(key)) return absl::NotFoundError("volume item key " + key + " is missing");
      if (absl::Status s = WriteFile(dir + "/" + item["path"].get<std::string>(), data[key]);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  for (const auto& [key, value] : data.items()) {
    if (absl::Status s = WriteFile(dir + "/" + key, value.get<std::string>()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PodRunner>> PodRunner::Start(const nlohmann::json& objects,
                                                            const std::string& work_dir,
                                                            const SecretData& secrets) {
  const nlohmann::json ds = FindObject(objects, "DaemonSet");
  if (ds.is_null()) return absl::NotFoundError("no DaemonSet in the rendered objects");
  std::unique_ptr<PodRunner> pod(new PodRunner());
  pod->work_dir_ = work_dir;
  pod->pod_spec_ = ds["spec"]["template"]["spec"];
  pod->container_ = pod->pod_spec_["containers"][0];

  // The image: lazypull's binaries where the image has them.
  for (const char* bin : {"lazypull-snapshotter", "lazypull"}) {
    std::error_code ec;
    fs::copy_file(BinaryDir() + "/bin/" + bin, std::string("/usr/bin/") + bin,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("install ", bin, ": ", ec.message()));
  }
  if (absl::Status s = pod->PrepareVolumes(objects, secrets); !s.ok()) return s;

  // env and $(NAME) in command and args, as the kubelet sets them on this node.
  absl::StatusOr<std::map<std::string, std::string>> kubelet_env = KubeletEnv(pod->container_);
  if (!kubelet_env.ok()) return kubelet_env.status();
  const std::map<std::string, std::string>& env = *kubelet_env;
  auto expand = [&](const std::string& arg) { return ExpandKubeletVars(arg, env); };
  for (const nlohmann::json& a : pod->container_["command"]) pod->argv_.push_back(expand(a));
  for (const nlohmann::json& a : pod->container_.value("args", nlohmann::json::array())) {
    pod->argv_.push_back(expand(a));
  }
  auto proc = Subprocess::Start(pod->argv_, work_dir + "/pod.log", env);
  if (!proc.ok()) return proc.status();
  pod->process_ = std::move(*proc);
  return pod;
}

absl::Status PodRunner::PrepareVolumes(const nlohmann::json& objects, const SecretData& secrets) {
  // First every volume's content (the kubelet creates hostPath dirs on the node before the
  // container exists), then the mounts (a read-only one may contain another's mount point).
  struct Bind {
    std::string name, source, target;
    bool read_only;
  };
  std::vector<Bind> binds;
  for (const nlohmann::json& vm : container_["volumeMounts"]) {
    const std::string name = vm["name"];
    const std::string mount_path = vm["mountPath"];
    const bool read_only = vm.value("readOnly", false);
    const nlohmann::json volume = ByName(pod_spec_["volumes"], name);
    if (volume.is_null()) return absl::NotFoundError("volumeMount " + name + " has no volume");
    std::string source;
    if (volume.contains("hostPath")) {
      source = volume["hostPath"]["path"];
      if (absl::Status s = CheckHostPath(source, volume["hostPath"].value("type", "")); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("volume ", name, ": ", s.message()));
      }
    } else if (volume.contains("configMap") || volume.contains("secret")) {
      const bool is_cm = volume.contains("configMap");
      const nlohmann::json& ref = is_cm ? volume["configMap"] : volume["secret"];
      nlohmann::json data;
      if (is_cm) {
        const nlohmann::json cm = FindObject(objects, "ConfigMap", ref["name"]);
        if (cm.is_null()) return absl::NotFoundError("no ConfigMap " + ref["name"].dump());
        data = cm["data"];
      } else {
        auto it = secrets.find(ref["secretName"]);
        if (it == secrets.end())
          return absl::NotFoundError("no Secret " + ref["secretName"].dump());
        data = it->second;
      }
      source = work_dir_ + "/volumes/" + name;
      absl::Status s =
          WriteVolumeFiles(source, data, ref.contains("items") ? ref["items"] : nlohmann::json());
      if (!s.ok()) return s;
    } else {
      return absl::UnimplementedError("volume " + name + " of an unknown kind: " + volume.dump());
    }
    if (vm.contains("subPath")) source += "/" + vm["subPath"].get<std::string>();
    // A hostPath at its own path (every one of this chart) is already in place: the node's
    // tree is the container's.
    if (source == mount_path && !read_only) continue;
    binds.push_back({name, source, mount_path, read_only});
  }
  for (const Bind& b : binds) {
    if (absl::Status s = BindMount(b.source, b.target, b.read_only); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("volume ", b.name, ": ", s.message()));
    }
    mounts_.push_back(b.target);
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandResult> PodRunner::RunProbe(const std::string& probe) const {
  if (!container_.contains(probe)) return absl::NotFoundError("container has no " + probe);
  std::vector<std::string> argv;
  for (const nlohmann::json& a : container_[probe]["exec"]["command"]) argv.push_back(a);
  return RunCommand(argv, std::chrono::seconds(container_[probe].value("timeoutSeconds", 1)));
}

absl::Status PodRunner::WaitStarted() {
  const nlohmann::json& startup = container_["startupProbe"];
  // The kubelet gives up after failureThreshold probes periodSeconds apart; probe more often
  // within that time, since the daemon usually serves within a second.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(startup.value("periodSeconds", 10) *
                                                              startup.value("failureThreshold", 3));
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process_.running()) {
      return absl::UnavailableError("container exited while starting; log:\n" + ReadLog());
    }
    absl::StatusOr<CommandResult> r = RunProbe("startupProbe");
    if (r.ok() && r->exit_code == 0) {
      absl::StatusOr<CommandResult> ready = RunProbe("readinessProbe");
      if (!ready.ok()) return ready.status();
      if (ready->exit_code != 0) return absl::UnavailableError("not ready: " + ready->output);
      return absl::OkStatus();
    }
    last = r.ok() ? r->output : r.status().ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError("startup probe kept failing: " + last + "\nlog:\n" +
                                     ReadLog());
}

absl::Status PodRunner::Stop() {
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  process_.Signal(SIGTERM);
  const int grace = pod_spec_.value("terminationGracePeriodSeconds", 30);
  absl::StatusOr<int> status = process_.Wait(std::chrono::seconds(grace));
  if (!status.ok()) {
    process_.Kill();
    return absl::DeadlineExceededError("container did not stop within the grace period");
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(absl::StrCat("container exited with status ", *status));
  }
  return absl::OkStatus();
}

PodRunner::~PodRunner() {
  Stop().IgnoreError();
  for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
}

}  // namespace lazypull::testing
