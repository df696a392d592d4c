// Metrics: the daemon's one registry of Prometheus metrics (prometheus-cpp). The Daemon owns
// it and passes it down like its other shared objects; modules feed it in two ways:
//
//  - Recorded as things happen, through narrow hooks that know nothing about Prometheus:
//    registry::RequestObserver (every registry HTTP exchange), mount::FsOpObserver (every
//    FUSE request), RecordSnapshotRpc (every Snapshots RPC, from a gRPC interceptor).
//  - Read at scrape time from counters the modules keep anyway (chunk cache, layer readers,
//    background scheduler): a module registers a Source with AddSource, which fills a
//    FamilySet on every scrape.
//
// Every metric name starts with kMetricPrefix and follows Prometheus' naming rules (counters
// end in _total, units are _bytes and _seconds). MetricsServer (metrics_server.h) serves
// collectable() over HTTP.
//
// Thread-safety: every method is thread-safe. The observers and collectable() share the
// metrics' state, so they stay valid after the Metrics object is gone.
#ifndef LAZYPULL_METRICS_METRICS_H_
#define LAZYPULL_METRICS_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fetcher/registry/request_observer.h"
#include "mount/op_observer.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace lazypull::metrics {

inline constexpr std::string_view kMetricPrefix = "lazypull_";

using Labels = std::vector<std::pair<std::string, std::string>>;

// Families produced by a Source during one scrape. Not thread-safe (one scrape's scratch).
class FamilySet {
 public:
  // Adds one sample to the family `name` (created with `help` on first use; a family keeps
  // the type it was created with). `name` must start with kMetricPrefix; counters must end in
  // _total. A bad name is a programming error: it is logged and the sample dropped.
  void Counter(std::string_view name, std::string_view help, const Labels& labels, double value);
  void Gauge(std::string_view name, std::string_view help, const Labels& labels, double value);

  std::vector<prometheus::MetricFamily> Take() { return std::move(families_); }

 private:
  prometheus::ClientMetric& Add(std::string_view name, std::string_view help,
                                prometheus::MetricType type, const Labels& labels);
  std::vector<prometheus::MetricFamily> families_;
};

class Metrics {
 public:
  struct State;  // internal: shared by the observers, the collector and the source handles

  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Everything to expose: the recorded metrics followed by every Source's families.
  std::shared_ptr<prometheus::Collectable> collectable() const;
  // The Prometheus text exposition of collectable() (what GET /metrics answers).
  std::string TextExposition() const;

  // One Snapshots RPC (`method` is the short name, e.g. "Prepare") that ended with `code`.
  void RecordSnapshotRpc(std::string_view method, absl::StatusCode code, absl::Duration latency);
  // Restored and failed remote layers of the daemon's start (set once by the restore).
  void SetRestoreResult(size_t restored, size_t failed);

  // Hooks for the registry client (RegistryConfig::observer) and the FUSE file systems
  // (FuseOptions::op_observer).
  std::shared_ptr<registry::RequestObserver> registry_observer() const;
  std::shared_ptr<mount::FsOpObserver> fs_op_observer() const;

  // A scrape-time source. Called on the HTTP server's thread; must not block for long.
  using Source = std::function<void(FamilySet&)>;
  // Registered while the handle lives: destroying it waits for a scrape in progress, so a
  // source may capture an object that the handle's owner destroys right after it.
  class SourceHandle {
   public:
    SourceHandle() = default;
    ~SourceHandle() { Reset(); }
    SourceHandle(SourceHandle&& other) noexcept { *this = std::move(other); }
    SourceHandle& operator=(SourceHandle&& other) noexcept;
    void Reset();

   private:
    friend class Metrics;
    SourceHandle(std::shared_ptr<State> state, uint64_t id) : state_(std::move(state)), id_(id) {}
    std::shared_ptr<State> state_;
    uint64_t id_ = 0;
  };
  [[nodiscard]] SourceHandle AddSource(Source source);

 private:
  std::shared_ptr<State> state_;
};

}  // namespace lazypull::metrics

#endif  // LAZYPULL_METRICS_METRICS_H_
