// The Helm chart (issue 11), rendered by helmrender (Helm's engine semantics on Go
// text/template + sprig): the renderer's Helm behaviour on a fixture chart; charts/lazypull
// with its default values and with a values file that sets everything, validated against
// Kubernetes' schemas (kubernetes-models) and checked value by value — the generated
// lazypull.toml and hosts.toml files are parsed by the daemon's own parsers; bad values fail
// rendering with a message naming the value.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "fetcher/registry/hosts.h"
#include "server/config.h"
#include "server/cri/cri_keychain_config.h"
#include "server/remote/remote_layer_manager.h"
#include "tests/deploy/chart_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

std::string FixtureChart() { return SourceDir() + "/tests/deploy/testdata/fixture-chart"; }
std::string ValuesAll() { return SourceDir() + "/tests/deploy/testdata/values-all.yaml"; }

const nlohmann::json& Container(const nlohmann::json& daemonset) {
  return daemonset["spec"]["template"]["spec"]["containers"][0];
}

// volumeMounts[] / volumes[] entry by name (null when absent).
nlohmann::json ByName(const nlohmann::json& list, const std::string& name) {
  for (const nlohmann::json& e : list) {
    if (e.value("name", "") == name) return e;
  }
  return nullptr;
}

std::vector<std::string> Strings(const nlohmann::json& array) {
  std::vector<std::string> out;
  for (const nlohmann::json& s : array) out.push_back(s.get<std::string>());
  return out;
}

TEST(HelmRenderTest, ImplementsHelmTemplateSemantics) {
  auto r = RunHelmRender({"--chart", FixtureChart(), "--release-name", "rel", "--namespace", "ns",
                          "--set", "removable=null", "--api-versions", "monitoring.coreos.com/v1"});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  EXPECT_EQ(r->output, R"(---
# Source: fixture/templates/out.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: rel-fixture
  namespace: ns
  labels:
    name: rel
    chart: fixture-1.2.3
data:
  include: "name: rel\nchart: fixture-1.2.3"
  tpl: "hello from rel"
  required: "present"
  toYaml: |
    list:
    - a
    - b
    map:
      a: two
      z: 1
  missing: ""
  removed: ""
  app: "4.5"
  kube: v1.29.0 1.29
  hasApps: "true"
  hasMonitoring: "true"
  template: fixture/templates/out.yaml
  file: "a chart file"
  sprig: "1,2,3"
  lookup: "0"
  revision: "1"
  install: "true"
)");
  // NOTES.txt only on request; partials ("_*.tpl") never.
  r = RunHelmRender({"--chart", FixtureChart(), "--release-name", "rel", "--notes"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "Installed fixture as rel.\n");
  // required: Helm's "execution error at (FILE:LINE:COL): MESSAGE".
  r = RunHelmRender({"--chart", FixtureChart(), "--set", "needed=null"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_EQ(r->output,
            "Error: execution error at (fixture/templates/out.yaml:11:15): needed is required\n");
  r = RunHelmRender({"--chart", FixtureChart(), "--set-string", "needed="});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(absl::StrContains(r->output, "needed is required")) << r->output;
  // The chart's kubeVersion constraint against .Capabilities.
  r = RunHelmRender({"--chart", FixtureChart(), "--kube-version", "1.24.3"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output,
            "Error: chart requires kubeVersion: >=1.25.0-0 which is incompatible with "
            "Kubernetes v1.24.3\n");
  // Capabilities.APIVersions.Has is false for what the cluster does not serve.
  r = RunHelmRender({"--chart", FixtureChart()});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(absl::StrContains(r->output, "hasMonitoring: \"false\"")) << r->output;
}

TEST(HelmChartTest, DefaultValuesRenderAValidDaemonSet) {
  auto objects = RenderChart({"--namespace", "kube-system", "--release-name", "lazypull"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  std::vector<std::string> kinds;
  for (const auto& o : *objects) kinds.push_back(o["kind"].get<std::string>());
  EXPECT_EQ(kinds, (std::vector<std::string>{"ConfigMap", "DaemonSet", "DaemonSet", "Service",
                                             "ServiceAccount"}));
  auto report = ValidateWithKubernetesModels(*objects);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(*report,
            "ok ConfigMap/lazypull\nok DaemonSet/lazypull\nok DaemonSet/lazypull-fuse-holder\n"
            "ok Service/lazypull-metrics\nok ServiceAccount/lazypull\n");

  const nlohmann::json ds = FindObject(*objects, "DaemonSet", "lazypull");
  // Issue 20: the FUSE holder is its own DaemonSet, never rolled with lazypull's, sharing only
  // a hostPath socket directory (not the root with the lazy mounts, which it would pin).
  const nlohmann::json holder = FindObject(*objects, "DaemonSet", "lazypull-fuse-holder");
  EXPECT_EQ(holder["spec"]["updateStrategy"]["type"], "OnDelete");
  const nlohmann::json& hc = holder["spec"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(hc["image"], "ghcr.io/lazypull/lazypull:0.1.0");
  EXPECT_EQ(Strings(hc["command"]),
            (std::vector<std::string>{"/usr/bin/lazypull-fuse-holder", "--socket",
                                      "/run/lazypull-fuse-holder/fuse-holder.sock"}));
  EXPECT_FALSE(hc["securityContext"].contains("privileged"));
  ASSERT_EQ(holder["spec"]["template"]["spec"]["volumes"].size(), 1u);
  EXPECT_EQ(holder["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"],
            "/run/lazypull-fuse-holder");
  EXPECT_NE(holder["spec"]["selector"], ds["spec"]["selector"]);
  bool daemon_sees_socket = false;
  for (const auto& m : Container(ds)["volumeMounts"]) {
    daemon_sees_socket = daemon_sees_socket || m["mountPath"] == "/run/lazypull-fuse-holder";
  }
  EXPECT_TRUE(daemon_sees_socket);
  const nlohmann::json& pod = ds["spec"]["template"]["spec"];
  const nlohmann::json& c = Container(ds);
  EXPECT_EQ(ds["metadata"]["namespace"], "kube-system");
  EXPECT_EQ(c["image"], "ghcr.io/lazypull/lazypull:0.1.0");  // tag = appVersion
  EXPECT_EQ(c["imagePullPolicy"], "IfNotPresent");
  EXPECT_EQ(Strings(c["command"]), std::vector<std::string>{"/usr/bin/lazypull-snapshotter"});
  // Metrics listen on the node's own address (downward API), not on every interface of the
  // node's network (hostNetwork).
  EXPECT_EQ(Strings(c["args"]),
            (std::vector<std::string>{"--config", "/etc/lazypull/config.toml", "--metrics-host",
                                      "$(LAZYPULL_NODE_IP)"}));
  ASSERT_EQ(c["env"].size(), 1u);
  EXPECT_EQ(c["env"][0]["name"], "LAZYPULL_NODE_IP");
  EXPECT_EQ(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
  EXPECT_EQ(c["securityContext"]["privileged"], true);
  EXPECT_FALSE(pod.contains("hostPID"));
  EXPECT_EQ(pod["hostNetwork"], true);
  EXPECT_EQ(pod["priorityClassName"], "system-node-critical");
  EXPECT_EQ(pod["serviceAccountName"], "lazypull");
  EXPECT_EQ(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
  const std::vector<std::string> probe = {"/usr/bin/lazypull",           "health",    "--address",
                                          "/run/lazypull/lazypull.sock", "--timeout", "5"};
  for (const char* p : {"startupProbe", "livenessProbe", "readinessProbe"}) {
    EXPECT_EQ(Strings(c[p]["exec"]["command"]), probe) << p;
  }
  EXPECT_EQ(c["ports"][0]["containerPort"], 9102);
  const nlohmann::json& ann = ds["spec"]["template"]["metadata"]["annotations"];
  EXPECT_EQ(ann["prometheus.io/scrape"], "true");
  EXPECT_EQ(ann["prometheus.io/port"], "9102");
  EXPECT_EQ(ann["prometheus.io/path"], "/metrics");
  EXPECT_EQ(ann["checksum/config"].get<std::string>().size(), 64u);

  // Node paths mounted at the same paths; the root with Bidirectional propagation.
  struct Mount {
    std::string name, path, host_type;
    bool read_only;
    std::string propagation;
  };
  for (const Mount& m : std::vector<Mount>{
           {"root", "/var/lib/lazypull", "DirectoryOrCreate", false, "Bidirectional"},
           {"socket-dir", "/run/lazypull", "DirectoryOrCreate", false, ""},
           {"dev-fuse", "/dev/fuse", "CharDevice", false, ""},
           {"containerd-config", "/etc/containerd", "DirectoryOrCreate", true, ""},
           {"containerd-certs", "/etc/containerd/certs.d", "DirectoryOrCreate", true, ""}}) {
    nlohmann::json vm = ByName(c["volumeMounts"], m.name);
    nlohmann::json v = ByName(pod["volumes"], m.name);
    ASSERT_FALSE(vm.is_null()) << m.name;
    ASSERT_FALSE(v.is_null()) << m.name;
    EXPECT_EQ(vm["mountPath"], m.path) << m.name;
    EXPECT_EQ(v["hostPath"]["path"], m.path) << m.name;
    EXPECT_EQ(v["hostPath"]["type"], m.host_type) << m.name;
    EXPECT_EQ(vm.value("readOnly", false), m.read_only) << m.name;
    EXPECT_EQ(vm.value("mountPropagation", ""), m.propagation) << m.name;
  }
  nlohmann::json config_mount = ByName(c["volumeMounts"], "config");
  EXPECT_EQ(config_mount["mountPath"], "/etc/lazypull/config.toml");
  EXPECT_EQ(config_mount["subPath"], "config.toml");

  // lazypull.toml, through the daemon's own parsers.
  const std::string toml =
      FindObject(*objects, "ConfigMap", "lazypull")["data"]["config.toml"].get<std::string>();
  auto config = ParseDaemonConfig(toml, "chart");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << toml;
  EXPECT_EQ(config->root, "/var/lib/lazypull");
  EXPECT_EQ(config->address, "/run/lazypull/lazypull.sock");
  EXPECT_EQ(config->log_level, "info");
  EXPECT_TRUE(absl::StrContains(
      toml, "fuse_holder_socket = \"/run/lazypull-fuse-holder/fuse-holder.sock\""))
      << toml;
  EXPECT_EQ(config->mount_backend, MountBackend::kAuto);
  // Without the node's IP (the flag above) the daemon stays node-local; never 0.0.0.0.
  EXPECT_EQ(config->metrics_address, "127.0.0.1:9102");
  auto options = remote::RemoteLayerManager::OptionsFromToml(config->root, *config->table);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->cache.max_bytes, uint64_t{10} << 30);
  EXPECT_EQ(options->registry.config_path, "/etc/containerd/certs.d");
  EXPECT_EQ(options->registry.docker_config, "");
  EXPECT_TRUE(options->mount.reader.prefetch);
  EXPECT_TRUE(options->mount.reader.background_fetch);
  EXPECT_EQ(options->mount.reader.fetch_timeout, std::chrono::seconds(30));
  auto cri = cri::CriKeychainConfigFromToml(*config->table);
  ASSERT_TRUE(cri.ok()) << cri.status();
  EXPECT_FALSE(cri->enable_keychain);

  const nlohmann::json svc = FindObject(*objects, "Service");
  EXPECT_EQ(svc["spec"]["ports"][0]["port"], 9102);
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], "metrics");
  EXPECT_EQ(svc["spec"]["selector"], ds["spec"]["selector"]["matchLabels"]);
  EXPECT_EQ(FindObject(*objects, "ServiceAccount")["automountServiceAccountToken"], false);
}

TEST(HelmChartTest, AValuesFileSettingEverythingLandsAndValidates) {
  auto objects = RenderChart({"--values", ValuesAll(), "--namespace", "infra"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  auto report = ValidateWithKubernetesModels(*objects);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(*report,
            "ok ConfigMap/node-lazypull\nok DaemonSet/node-lazypull\n"
            "ok DaemonSet/node-lazypull-fuse-holder\n"
            "ok ConfigMap/node-lazypull-mirrors\nok Service/node-lazypull-metrics\n"
            "ok ServiceAccount/lazypull-sa\nok ServiceMonitor/node-lazypull\n");

  const nlohmann::json ds = FindObject(*objects, "DaemonSet");
  const nlohmann::json& tmpl = ds["spec"]["template"];
  const nlohmann::json& pod = tmpl["spec"];
  const nlohmann::json& c = Container(ds);
  EXPECT_EQ(c["image"], "registry.example.com/infra/lazypull:9.9.9-test");
  EXPECT_EQ(c["imagePullPolicy"], "Always");
  EXPECT_EQ(pod["imagePullSecrets"][0]["name"], "pull-secret");
  EXPECT_EQ(pod["serviceAccountName"], "lazypull-sa");
  EXPECT_EQ(FindObject(*objects, "ServiceAccount")["metadata"]["annotations"]["example.com/owner"],
            "storage-team");
  EXPECT_EQ(pod["hostNetwork"], false);
  EXPECT_FALSE(pod.contains("dnsPolicy"));
  EXPECT_EQ(pod["priorityClassName"], "lazypull-critical");
  EXPECT_EQ(pod["terminationGracePeriodSeconds"], 90);
  EXPECT_EQ(pod["tolerations"][0]["key"], "node-role.kubernetes.io/control-plane");
  EXPECT_EQ(pod["nodeSelector"]["lazypull.example.com/enabled"], "true");
  EXPECT_EQ(pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
               ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][1],
            "arm64");
  EXPECT_EQ(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "25%");
  EXPECT_EQ(c["resources"]["limits"]["memory"], "4Gi");
  EXPECT_EQ(c["resources"]["requests"]["cpu"], "250m");
  EXPECT_EQ(tmpl["metadata"]["labels"]["tier"], "node");
  EXPECT_EQ(tmpl["metadata"]["annotations"]["example.com/team"], "storage");
  EXPECT_EQ(tmpl["metadata"]["annotations"]["prometheus.io/port"], "9200");
  // An explicit bindAddress is used as is: no node IP.
  EXPECT_EQ(Strings(c["args"]), (std::vector<std::string>{"--config", "/etc/lazypull/config.toml",
                                                          "--log-level=warn"}));
  EXPECT_FALSE(c.contains("env"));
  EXPECT_EQ(c["ports"][0]["containerPort"], 9200);
  EXPECT_EQ(c["livenessProbe"]["periodSeconds"], 20);
  EXPECT_EQ(c["livenessProbe"]["timeoutSeconds"], 4);
  EXPECT_EQ(c["livenessProbe"]["failureThreshold"], 5);
  EXPECT_EQ(c["startupProbe"]["failureThreshold"], 120);
  EXPECT_EQ(Strings(c["readinessProbe"]["exec"]["command"]),
            (std::vector<std::string>{"/usr/bin/lazypull", "health", "--address",
                                      "/run/lazypull-x/lazypull.sock", "--timeout", "3"}));
  // Paths: root, socket dir and containerd's config dir from the values.
  EXPECT_EQ(ByName(c["volumeMounts"], "root")["mountPath"], "/data/lazypull");
  EXPECT_EQ(ByName(pod["volumes"], "root")["hostPath"]["path"], "/data/lazypull");
  EXPECT_EQ(ByName(c["volumeMounts"], "socket-dir")["mountPath"], "/run/lazypull-x");
  EXPECT_EQ(ByName(c["volumeMounts"], "containerd-config")["mountPath"], "/etc/k3s-containerd");
  // Mirrors replace the node's certs.d; credentials come from the Secret; the CRI socket.
  EXPECT_TRUE(ByName(c["volumeMounts"], "containerd-certs").is_null());
  EXPECT_EQ(ByName(c["volumeMounts"], "mirrors")["mountPath"], "/etc/lazypull/certs.d");
  nlohmann::json secret = ByName(pod["volumes"], "docker-config")["secret"];
  EXPECT_EQ(secret["secretName"], "regcred");
  EXPECT_EQ(secret["items"][0]["key"], "config.json");
  EXPECT_EQ(secret["items"][0]["path"], "config.json");
  EXPECT_EQ(ByName(c["volumeMounts"], "docker-config")["mountPath"], "/etc/lazypull/docker");
  EXPECT_EQ(ByName(pod["volumes"], "cri-socket")["hostPath"]["path"],
            "/run/k3s/containerd/containerd.sock");

  const std::string toml =
      FindObject(*objects, "ConfigMap", "node-lazypull")["data"]["config.toml"].get<std::string>();
  auto config = ParseDaemonConfig(toml, "chart");
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << toml;
  EXPECT_EQ(config->root, "/data/lazypull");
  EXPECT_EQ(config->address, "/run/lazypull-x/lazypull.sock");
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->mount_backend, MountBackend::kErofs);
  EXPECT_EQ(config->metrics_address, "127.0.0.1:9200");
  auto options = remote::RemoteLayerManager::OptionsFromToml(config->root, *config->table);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->cache.max_bytes, uint64_t{50} << 30);
  EXPECT_EQ(options->registry.config_path, "/etc/lazypull/certs.d");
  EXPECT_EQ(options->registry.docker_config, "/etc/lazypull/docker/config.json");
  EXPECT_EQ(options->registry.plain_http, std::set<std::string>{"registry.internal:5000"});
  EXPECT_FALSE(options->mount.reader.prefetch);
  EXPECT_FALSE(options->mount.reader.background_fetch);
  EXPECT_EQ(options->mount.reader.background_policy.bandwidth, uint64_t{20} << 20);
  EXPECT_EQ(options->mount.reader.fetch_timeout, std::chrono::seconds(45));
  EXPECT_EQ(options->remote.restore_concurrency, 8u);  // from extraConfig (through tpl)
  EXPECT_TRUE(absl::StrContains(toml, "for release lazypull")) << toml;
  auto cri = cri::CriKeychainConfigFromToml(*config->table);
  ASSERT_TRUE(cri.ok()) << cri.status();
  EXPECT_TRUE(cri->enable_keychain);
  EXPECT_EQ(cri->image_service_path, "/run/k3s/containerd/containerd.sock");

  // The mirrors' hosts.toml files, parsed by lazypull's registry host resolution: mirrors
  // first (pull + resolve only), the registry itself last.
  const nlohmann::json mirrors = FindObject(*objects, "ConfigMap", "node-lazypull-mirrors");
  const nlohmann::json items = ByName(pod["volumes"], "mirrors")["configMap"]["items"];
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0]["key"], "docker.io.hosts.toml");
  EXPECT_EQ(items[0]["path"], "docker.io/hosts.toml");
  EXPECT_EQ(items[1]["key"], "registry.internal_5000.hosts.toml");
  EXPECT_EQ(items[1]["path"], "registry.internal:5000/hosts.toml");
  auto docker = registry::ParseHostsToml(options->registry, "docker.io",
                                         mirrors["data"]["docker.io.hosts.toml"].get<std::string>(),
                                         "/etc/lazypull/certs.d/docker.io");
  ASSERT_TRUE(docker.ok()) << docker.status();
  ASSERT_EQ(docker->size(), 2u);
  EXPECT_EQ((*docker)[0].ApiRoot(), "https://mirror.gcr.io/v2");
  EXPECT_TRUE((*docker)[0].mirror);
  EXPECT_EQ((*docker)[0].capabilities, registry::kCapPull | registry::kCapResolve);
  EXPECT_EQ((*docker)[1].ApiRoot(), "https://registry-1.docker.io/v2");
  auto internal = registry::ParseHostsToml(
      options->registry, "registry.internal:5000",
      mirrors["data"]["registry.internal_5000.hosts.toml"].get<std::string>(), "/x");
  ASSERT_TRUE(internal.ok()) << internal.status();
  ASSERT_EQ(internal->size(), 3u);
  EXPECT_EQ((*internal)[0].ApiRoot(), "http://10.0.0.5:5000/v2");
  EXPECT_EQ((*internal)[1].ApiRoot(), "https://mirror2.example.com/v2-mirror/v2");
  EXPECT_EQ((*internal)[2].ApiRoot(), "http://registry.internal:5000/v2");

  const nlohmann::json svc = FindObject(*objects, "Service");
  EXPECT_EQ(svc["spec"]["type"], "NodePort");
  EXPECT_EQ(svc["metadata"]["annotations"]["example.com/scrape-class"], "node");
  const nlohmann::json sm = FindObject(*objects, "ServiceMonitor");
  EXPECT_EQ(sm["metadata"]["labels"]["release"], "prometheus");
  EXPECT_EQ(sm["spec"]["endpoints"][0]["port"], "metrics");
  EXPECT_EQ(sm["spec"]["endpoints"][0]["interval"], "15s");
  EXPECT_EQ(sm["spec"]["endpoints"][0]["scrapeTimeout"], "5s");
  EXPECT_EQ(sm["spec"]["selector"]["matchLabels"], svc["spec"]["selector"]);
  EXPECT_EQ(sm["spec"]["namespaceSelector"]["matchNames"][0], "infra");

  auto notes = RunHelmRender({"--chart", ChartDir(), "--values", ValuesAll(), "--notes"});
  ASSERT_TRUE(notes.ok());
  EXPECT_TRUE(absl::StrContains(notes->output, "address = \"/run/lazypull-x/lazypull.sock\""));
  EXPECT_TRUE(absl::StrContains(notes->output,
                                "--image-service-endpoint=unix:///run/lazypull-x/lazypull.sock"));
}

// Every interface of the node only when asked for; with metrics off, no node IP either.
TEST(HelmChartTest, MetricsListenOnEveryInterfaceOnlyWhenAsked) {
  struct Case {
    std::vector<std::string> set;
    std::string address;
    bool node_ip;
  };
  for (const Case& k : std::vector<Case>{
           {{}, "127.0.0.1:9102", true},
           {{"metrics.bindAddress=0.0.0.0"}, "0.0.0.0:9102", false},
           {{"metrics.bindAddress=::"}, "[::]:9102", false},
           {{"metrics.enabled=false"}, "", false},
       }) {
    std::vector<std::string> args = {"--release-name", "lazypull"};
    for (const std::string& v : k.set) args.insert(args.end(), {"--set", v});
    auto objects = RenderChart(args);
    ASSERT_TRUE(objects.ok()) << objects.status();
    const nlohmann::json ds = FindObject(*objects, "DaemonSet");
    const nlohmann::json& c = Container(ds);
    auto config = ParseDaemonConfig(
        FindObject(*objects, "ConfigMap", "lazypull")["data"]["config.toml"].get<std::string>(),
        "chart");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->metrics_address, k.address) << ::testing::PrintToString(k.set);
    const std::vector<std::string> args_out = Strings(c["args"]);
    EXPECT_EQ(std::find(args_out.begin(), args_out.end(), "--metrics-host") != args_out.end(),
              k.node_ip)
        << ::testing::PrintToString(k.set);
    EXPECT_EQ(c.contains("env"), k.node_ip) << ::testing::PrintToString(k.set);
  }
}

// Issue 20: with takeover the new pod starts before the old one stops (maxSurge), runs with
// --takeover, and declares no port (under hostNetwork a hostPort two pods of one node could not
// share); the metrics Service targets the port by number.
TEST(HelmChartTest, TakeoverSurgesTheNewPodWithoutAHostPort) {
  auto objects = RenderChart({"--release-name", "lazypull", "--set", "takeover.enabled=true"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  auto report = ValidateWithKubernetesModels(*objects);
  ASSERT_TRUE(report.ok()) << report.status();
  const nlohmann::json ds = FindObject(*objects, "DaemonSet", "lazypull");
  EXPECT_EQ(ds["spec"]["updateStrategy"],
            nlohmann::json::parse(R"({"type":"RollingUpdate",)"
                                  R"("rollingUpdate":{"maxSurge":1,"maxUnavailable":0}})"));
  const nlohmann::json& c = Container(ds);
  EXPECT_EQ(Strings(c["args"]),
            (std::vector<std::string>{"--config", "/etc/lazypull/config.toml", "--metrics-host",
                                      "$(LAZYPULL_NODE_IP)", "--takeover"}));
  EXPECT_FALSE(c.contains("ports")) << c.dump();
  EXPECT_EQ(FindObject(*objects, "Service")["spec"]["ports"][0]["targetPort"], 9102);
  // The holder DaemonSet is unchanged: still never rolled with lazypull.
  EXPECT_EQ(
      FindObject(*objects, "DaemonSet", "lazypull-fuse-holder")["spec"]["updateStrategy"]["type"],
      "OnDelete");
}

TEST(HelmChartTest, BadValuesFailRenderingNamingTheValue) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string schema =
      "Error: values don't meet the specifications of the schema(s) in the following "
      "chart(s):\nlazypull:\n- ";
  for (const Case& c : std::vector<Case>{
           {{"--set", "backend=nfs"},
            schema + "backend: backend must be one of the following: \"auto\", \"fuse\", "
                     "\"erofs\"\n"},
           {{"--set-string", "metrics.port=9102"},
            schema + "metrics.port: Invalid type. Expected: integer, given: string\n"},
           {{"--set", "metrics.port=70000"},
            schema + "metrics.port: Must be less than or equal to 65535\n"},
           {{"--set", "cache.maxSize=10"},
            schema + "cache.maxSize: Invalid type. Expected: string, given: integer\n"},
           {{"--set", "cache.maxSize=ten"},
            schema + "cache.maxSize: Does not match pattern "
                     "'^[0-9]+(B|K|KB|KiB|M|MB|MiB|G|GB|GiB|T|TB|TiB)?$'\n"},
           {{"--set", "prefetch=yes"},
            schema + "prefetch: Invalid type. Expected: boolean, given: string\n"},
           {{"--set", "logLevel=verbose"},
            schema + "logLevel: logLevel must be one of the following: \"debug\", \"info\", "
                     "\"warn\", \"error\"\n"},
           {{"--set", "image.repository=null"}, schema + "image: repository is required\n"},
           {{"--set-string", "image.repository="},
            schema + "image.repository: String length must be greater than or equal to 1\n"},
           {{"--set", "paths.root=var/lib/lazypull"},
            schema + "paths.root: Does not match pattern '^/'\n"},
           {{"--set", "cahce.maxSize=1GiB"},
            schema + "(root): Additional property cahce is not allowed\n"},
           {{"--set", "metrics.serviceMonitor.enabled=true", "--set",
             "metrics.service.enabled=false"},
            "Error: execution error at (lazypull/templates/servicemonitor.yaml:3:4): "
            "metrics.serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor "
            "selects the metrics Service\n"},
       }) {
    std::vector<std::string> args = {"--chart", ChartDir()};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto r = RunHelmRender(args);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 1) << c.args[1];
    EXPECT_EQ(absl::StripTrailingAsciiWhitespace(r->output),
              absl::StripTrailingAsciiWhitespace(c.message))
        << c.args[1];
  }
  // A mirror that is not a URL, from a values file (keys with dots cannot be --set here).
  TempDir tmp("lphelm");
  ASSERT_TRUE(
      WriteFile(tmp.Sub("v.yaml"), "registry:\n  mirrors:\n    docker.io: [mirror.gcr.io]\n").ok());
  auto r = RunHelmRender({"--chart", ChartDir(), "--values", tmp.Sub("v.yaml")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(r->output, "- registry.mirrors.docker.io.0: Does not match pattern"))
      << r->output;
}

}  // namespace
}  // namespace lazypull::testing
