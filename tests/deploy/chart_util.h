// Helpers of the Helm chart tests: rendering charts/lazypull with helmrender (tests/deploy/
// helmrender, `helm template`'s semantics), finding objects in the result, and validating
// them against Kubernetes' schemas with the npm package kubernetes-models.
#ifndef LAZYPULL_TESTS_DEPLOY_CHART_UTIL_H_
#define LAZYPULL_TESTS_DEPLOY_CHART_UTIL_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {

// <source>/charts/lazypull
std::string ChartDir();

// Runs <build>/bin/lazypull-helmrender ARGS (the chart is not implied). Fails only when it
// cannot run; a rendering error is exit_code 1 with the message in output.
absl::StatusOr<CommandResult> RunHelmRender(const std::vector<std::string>& args);

// Renders charts/lazypull with `args` (e.g. {"--values", F, "--set", "k=v"}) into its objects.
// A rendering error is an error carrying the renderer's message.
absl::StatusOr<nlohmann::json> RenderChart(const std::vector<std::string>& args = {});

// The object of `kind` (and `name`, when given) in `objects`; null JSON when absent.
nlohmann::json FindObject(const nlohmann::json& objects, const std::string& kind,
                          const std::string& name = "");

// Validates `objects` with kubernetes-models (tests/deploy/k8s-validate, installed with npm
// into the build dir on first use). Returns the validator's report ("ok Kind/name" lines); an
// error carries it when an object is invalid.
absl::StatusOr<std::string> ValidateWithKubernetesModels(const nlohmann::json& objects);

// A container's env as the kubelet sets it on this node: literal values, and the downward-API
// fields a node-level pod uses (status.hostIP, status.podIP: 127.0.0.1 here). Unimplemented
// for any other source.
absl::StatusOr<std::map<std::string, std::string>> KubeletEnv(const nlohmann::json& container);

// `arg` with every $(NAME) of a variable in `env` replaced, as the kubelet does in command and
// args.
std::string ExpandKubeletVars(std::string arg, const std::map<std::string, std::string>& env);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_DEPLOY_CHART_UTIL_H_
