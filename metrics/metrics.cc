#include "metrics/metrics.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "base/logging.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

#ifndef LAZYPULL_VERSION
#define LAZYPULL_VERSION "unknown"
#endif

namespace lazypull::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Latency buckets (seconds). Registry requests: a loopback range read to a slow manifest.
const Histogram::BucketBoundaries kRegistryBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,  0.5,    1,     2.5,  5,     10,   30};
// Snapshot RPCs: metadata-only calls (sub-millisecond) to a lazy Prepare that resolves a
// manifest and reads a TOC.
const Histogram::BucketBoundaries kRpcBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
// FUSE requests: page-cache-missing metadata answers (microseconds) to reads that wait for a
// range request.
const Histogram::BucketBoundaries kFuseBuckets = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,     0.1,     0.25,   0.5,     1,      2.5,   5,      10,    30};

double Seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// A small, mostly-read cache of the children of labelled families, so a hot path (every FUSE
// request) neither builds a label map nor takes the family's lock to find its series.
template <typename Entry>
class SeriesCache {
 public:
  // Returns the entry keyed (a, b), creating it with `make` on first use.
  template <typename Make>
  const Entry& Get(std::string_view a, std::string_view b, Make&& make) {
    {
      std::shared_lock<std::shared_mutex> lock(mu_);
      for (const auto& e : entries_) {
        if (e->a == a && e->b == b) return e->entry;
      }
    }
    std::unique_lock<std::shared_mutex> lock(mu_);
    for (const auto& e : entries_) {
      if (e->a == a && e->b == b) return e->entry;
    }
    entries_.push_back(std::make_unique<Keyed>(Keyed{std::string(a), std::string(b), make()}));
    return entries_.back()->entry;
  }

 private:
  struct Keyed {
    std::string a, b;
    Entry entry;
  };
  std::shared_mutex mu_;
  std::vector<std::unique_ptr<Keyed>> entries_;
};

struct CountedHistogram {
  Counter* count;
  Histogram* latency;
  Counter* bytes;  // registry only
};

}  // namespace

struct Metrics::State {
  State();

  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  Family<Counter>& rpc_requests;
  Family<Counter>& rpc_errors;
  Family<Histogram>& rpc_latency;
  Family<Counter>& registry_requests;
  Family<Histogram>& registry_latency;
  Family<Counter>& registry_bytes;
  Family<Counter>& fuse_ops;
  Family<Histogram>& fuse_latency;
  Family<Gauge>& restored;

  SeriesCache<CountedHistogram> registry_series;  // (status, host)
  SeriesCache<CountedHistogram> fuse_series;      // (fs, op)

  std::mutex sources_mu;  // held for a whole scrape
  std::map<uint64_t, Source> sources;
  uint64_t next_source_id = 1;
};

Metrics::State::State()
    : rpc_requests(prometheus::BuildCounter()
                       .Name("lazypull_snapshot_requests_total")
                       .Help("Snapshots API RPCs handled, by method.")
                       .Register(*registry)),
      rpc_errors(prometheus::BuildCounter()
                     .Name("lazypull_snapshot_request_errors_total")
                     .Help("Snapshots API RPCs that ended with a gRPC error, by method and code "
                           "(ALREADY_EXISTS is how a lazily mounted layer answers Prepare).")
                     .Register(*registry)),
      rpc_latency(prometheus::BuildHistogram()
                      .Name("lazypull_snapshot_request_duration_seconds")
                      .Help("Time to answer a Snapshots API RPC, by method.")
                      .Register(*registry)),
      registry_requests(prometheus::BuildCounter()
                            .Name("lazypull_registry_requests_total")
                            .Help("HTTP requests to registries (every attempt, retry and "
                                  "redirect), by response status (\"error\": no response) and "
                                  "host (registry, mirror or redirect target).")
                            .Register(*registry)),
      registry_latency(prometheus::BuildHistogram()
                           .Name("lazypull_registry_request_duration_seconds")
                           .Help("Duration of registry HTTP requests until the whole response "
                                 "was received, by response status and host.")
                           .Register(*registry)),
      registry_bytes(prometheus::BuildCounter()
                         .Name("lazypull_registry_received_bytes_total")
                         .Help("Response body bytes received from registries, by status and "
                               "host.")
                         .Register(*registry)),
      fuse_ops(prometheus::BuildCounter()
                   .Name("lazypull_fuse_operations_total")
                   .Help("FUSE requests answered, by file system (layer: a lazy layer; "
                         "erofs_blob: the EROFS backend's blob files) and operation.")
                   .Register(*registry)),
      fuse_latency(prometheus::BuildHistogram()
                       .Name("lazypull_fuse_operation_duration_seconds")
                       .Help("Time to answer a FUSE request, by file system and operation.")
                       .Register(*registry)),
      restored(prometheus::BuildGauge()
                   .Name("lazypull_restored_layers")
                   .Help("Remote layers re-mounted when the daemon started, by result "
                         "(ok, failed).")
                   .Register(*registry)) {
  prometheus::BuildGauge()
      .Name("lazypull_build_info")
      .Help("Always 1; the version label names the running lazypull.")
      .Register(*registry)
      .Add({{"version", LAZYPULL_VERSION}})
      .Set(1);
  prometheus::BuildGauge()
      .Name("lazypull_start_time_seconds")
      .Help("Unix time at which the daemon started.")
      .Register(*registry)
      .Add({})
      .Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  restored.Add({{"result", "ok"}});
  restored.Add({{"result", "failed"}});
}

namespace {

class RegistryObserver final : public registry::RequestObserver {
 public:
  explicit RegistryObserver(std::shared_ptr<Metrics::State> state) : state_(std::move(state)) {}
  void OnResponse(const registry::RequestEvent& event) override;

 private:
  std::shared_ptr<Metrics::State> state_;
};

class FsObserver final : public mount::FsOpObserver {
 public:
  explicit FsObserver(std::shared_ptr<Metrics::State> state) : state_(std::move(state)) {}
  void OnOp(std::string_view fs, std::string_view op, std::chrono::nanoseconds duration) override;

 private:
  std::shared_ptr<Metrics::State> state_;
};

class Collector final : public prometheus::Collectable {
 public:
  explicit Collector(std::shared_ptr<Metrics::State> state) : state_(std::move(state)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<Metrics::State> state_;
};

}  // namespace

// Defined out of the anonymous namespace's classes so they can name Metrics::State members.
void RegistryObserver::OnResponse(const registry::RequestEvent& event) {
  char status[16];
  if (event.status <= 0) {
    std::snprintf(status, sizeof(status), "error");
  } else {
    std::snprintf(status, sizeof(status), "%d", event.status);
  }
  Metrics::State& s = *state_;
  // No host label: metrics name no image, repository or registry (issue 17; hosts.toml names
  // the mirrors). Per-host counts are in the registry client's stats and its log lines.
  const CountedHistogram& series = s.registry_series.Get(status, "", [&] {
    const prometheus::Labels labels = {{"status", status}};
    return CountedHistogram{&s.registry_requests.Add(labels),
                            &s.registry_latency.Add(labels, kRegistryBuckets),
                            &s.registry_bytes.Add(labels)};
  });
  series.count->Increment();
  series.latency->Observe(Seconds(event.duration));
  series.bytes->Increment(static_cast<double>(event.body_bytes));
}

void FsObserver::OnOp(std::string_view fs, std::string_view op, std::chrono::nanoseconds duration) {
  Metrics::State& s = *state_;
  const CountedHistogram& series = s.fuse_series.Get(fs, op, [&] {
    const prometheus::Labels labels = {{"fs", std::string(fs)}, {"op", std::string(op)}};
    return CountedHistogram{&s.fuse_ops.Add(labels), &s.fuse_latency.Add(labels, kFuseBuckets),
                            nullptr};
  });
  series.count->Increment();
  series.latency->Observe(Seconds(duration));
}

std::vector<prometheus::MetricFamily> Collector::Collect() const {
  std::vector<prometheus::MetricFamily> out = state_->registry->Collect();
  FamilySet scraped;
  {
    std::lock_guard<std::mutex> lock(state_->sources_mu);
    for (const auto& [id, source] : state_->sources) {
      try {
        source(scraped);
      } catch (const std::exception& e) {
        LogError("metrics source threw", {{"error", e.what()}});
      }
    }
  }
  for (prometheus::MetricFamily& f : scraped.Take()) out.push_back(std::move(f));
  return out;
}

prometheus::ClientMetric& FamilySet::Add(std::string_view name, std::string_view help,
                                         prometheus::MetricType type, const Labels& labels) {
  auto it = std::find_if(families_.begin(), families_.end(),
                         [&](const prometheus::MetricFamily& f) { return f.name == name; });
  if (it == families_.end()) {
    families_.push_back(prometheus::MetricFamily{std::string(name), std::string(help), type, {}});
    it = families_.end() - 1;
  }
  prometheus::ClientMetric& m = it->metric.emplace_back();
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  return m;
}

void FamilySet::Counter(std::string_view name, std::string_view help, const Labels& labels,
                        double value) {
  if (!name.starts_with(kMetricPrefix) || !name.ends_with("_total")) {
    LogError("bad counter name dropped", {{"name", std::string(name)}});
    return;
  }
  Add(name, help, prometheus::MetricType::Counter, labels).counter.value = value;
}

void FamilySet::Gauge(std::string_view name, std::string_view help, const Labels& labels,
                      double value) {
  if (!name.starts_with(kMetricPrefix) || name.ends_with("_total")) {
    LogError("bad gauge name dropped", {{"name", std::string(name)}});
    return;
  }
  Add(name, help, prometheus::MetricType::Gauge, labels).gauge.value = value;
}

Metrics::Metrics() : state_(std::make_shared<State>()) {}
Metrics::~Metrics() = default;

std::shared_ptr<prometheus::Collectable> Metrics::collectable() const {
  return std::make_shared<Collector>(state_);
}

std::string Metrics::TextExposition() const {
  return prometheus::TextSerializer().Serialize(Collector(state_).Collect());
}

void Metrics::RecordSnapshotRpc(std::string_view method, absl::StatusCode code,
                                absl::Duration latency) {
  const prometheus::Labels labels = {{"method", std::string(method)}};
  state_->rpc_requests.Add(labels).Increment();
  state_->rpc_latency.Add(labels, kRpcBuckets).Observe(absl::ToDoubleSeconds(latency));
  if (code != absl::StatusCode::kOk) {
    state_->rpc_errors
        .Add({{"method", std::string(method)}, {"code", absl::StatusCodeToString(code)}})
        .Increment();
  }
}

void Metrics::SetRestoreResult(size_t restored, size_t failed) {
  state_->restored.Add({{"result", "ok"}}).Set(static_cast<double>(restored));
  state_->restored.Add({{"result", "failed"}}).Set(static_cast<double>(failed));
}

std::shared_ptr<registry::RequestObserver> Metrics::registry_observer() const {
  return std::make_shared<RegistryObserver>(state_);
}

std::shared_ptr<mount::FsOpObserver> Metrics::fs_op_observer() const {
  return std::make_shared<FsObserver>(state_);
}

Metrics::SourceHandle Metrics::AddSource(Source source) {
  std::lock_guard<std::mutex> lock(state_->sources_mu);
  const uint64_t id = state_->next_source_id++;
  state_->sources.emplace(id, std::move(source));
  return SourceHandle(state_, id);
}

Metrics::SourceHandle& Metrics::SourceHandle::operator=(SourceHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    state_ = std::move(other.state_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void Metrics::SourceHandle::Reset() {
  if (state_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(state_->sources_mu);
    state_->sources.erase(id_);
  }
  state_.reset();
  id_ = 0;
}

}  // namespace lazypull::metrics
