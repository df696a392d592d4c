#include "server/remote/remote_metrics.h"

#include <map>
#include <string>

#include "server/remote/remote_layer_manager.h"

namespace lazypull::remote {
namespace {

// Every background state a LayerReader reports (layer_reader.h), so the series are stable.
constexpr const char* kBackgroundStates[] = {"off",       "pending",    "waiting", "paused",
                                             "throttled", "queued",     "running", "done",
                                             "failed",    "incomplete", "stopped"};

// One layer digest's counters, summed over the snapshots that mount it.
struct LayerTotals {
  LayerReaderStats stats;
  std::string backend;
  std::string format;
  bool graduated = false;
};

void AddCounters(const LayerReaderStats& from, LayerReaderStats& into) {
  into.bytes_fetched += from.bytes_fetched;
  into.requests += from.requests;
  into.chunks_fetched += from.chunks_fetched;
  into.cache_hits += from.cache_hits;
  into.cache_misses += from.cache_misses;
  into.fetch_errors += from.fetch_errors;
  into.verify_errors += from.verify_errors;
  into.timeouts += from.timeouts;
  into.bytes_read += from.bytes_read;
  into.background_bytes += from.background_bytes;
}

double Num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : -1;
}

}  // namespace

void AddRetiredStats(const LayerReaderStats& from, LayerReaderStats& into) {
  AddCounters(from, into);
}

void RemoteLayerManager::CollectMetrics(metrics::FamilySet& out) {
  std::map<std::string, LayerTotals> layers;  // by digest
  std::map<std::string, int> mounted_by_backend = {{"fuse", 0}, {"erofs", 0}};
  std::map<std::string, int> background = {};
  for (const char* state : kBackgroundStates) background[state] = 0;
  LayerReaderStats node;
  size_t unavailable;
  HandoverCounters handover;
  {
    std::lock_guard<std::mutex> lock(mu_);
    node = retired_;
    handover = retired_handover_;
    unavailable = unavailable_.size();
    for (const auto& [id, entry] : mounted_) {
      const mount::LayerMountStatus st = entry.mounted->Status();
      LayerTotals& t = layers[entry.source.layer.digest.ToString()];
      AddCounters(st.reader, t.stats);
      // Progress is per layer, not per snapshot: the most complete mount tells it.
      if (st.reader.local_bytes >= t.stats.local_bytes) {
        t.stats.local_bytes = st.reader.local_bytes;
        t.stats.total_bytes = st.reader.total_bytes;
      }
      t.backend = st.backend;
      t.format = entry.format;
      t.graduated = t.graduated || st.graduated;
      AddCounters(st.reader, node);
      handover.adoptions += st.adopted ? 1 : 0;
      handover.resent_requests += st.resent_requests;
      mounted_by_backend[st.backend]++;
      background[st.reader.background]++;
    }
  }

  for (const auto& [digest, t] : layers) {
    const metrics::Labels l = {{"layer", digest}};
    out.Gauge("lazypull_layer_info", "Always 1 for a mounted lazy layer; labels name it.",
              {{"layer", digest}, {"backend", t.backend}, {"format", t.format}}, 1);
    out.Counter("lazypull_layer_fetched_bytes_total",
                "Compressed bytes of the layer fetched from the registry.", l,
                t.stats.bytes_fetched);
    out.Gauge("lazypull_layer_fetched_ratio",
              "Fraction (0-1) of the layer's uncompressed file bytes that are local.", l,
              t.stats.fetched_percent() / 100.0);
    out.Gauge("lazypull_layer_size_bytes", "Uncompressed file bytes of the layer.", l,
              t.stats.total_bytes);
    out.Gauge("lazypull_layer_local_bytes", "Uncompressed file bytes of the layer held locally.", l,
              t.stats.local_bytes);
    out.Counter("lazypull_layer_read_bytes_total", "File bytes programs read from the layer.", l,
                t.stats.bytes_read);
    out.Counter("lazypull_layer_chunk_cache_hits_total",
                "Chunk reads of the layer served from the chunk cache.", l, t.stats.cache_hits);
    out.Counter("lazypull_layer_chunk_cache_misses_total",
                "Chunk reads of the layer that had to fetch.", l, t.stats.cache_misses);
    out.Counter("lazypull_layer_background_fetched_bytes_total",
                "Compressed bytes of the layer fetched by the background fetch.", l,
                t.stats.background_bytes);
    out.Gauge("lazypull_layer_graduated",
              "1 when the EROFS layer is served from a complete local copy.", l,
              t.graduated ? 1 : 0);
  }

  out.Counter("lazypull_fetched_bytes_total",
              "Compressed layer bytes fetched from registries for lazy layers.", {},
              node.bytes_fetched);
  out.Counter("lazypull_fetch_requests_total", "Range requests issued for lazy layers.", {},
              node.requests);
  out.Counter("lazypull_fetch_errors_total", "Range requests for lazy layers that failed.", {},
              node.fetch_errors);
  out.Counter("lazypull_verification_failures_total",
              "Fetched chunks that did not decompress or match their digest (never served).", {},
              node.verify_errors);
  out.Counter("lazypull_read_timeouts_total",
              "Reads that gave up waiting for a fetch ([mount] fetch_timeout).", {}, node.timeouts);
  out.Counter("lazypull_read_bytes_total", "File bytes programs read from lazy layers.", {},
              node.bytes_read);
  out.Counter("lazypull_background_fetched_bytes_total",
              "Compressed bytes fetched by background fetches.", {}, node.background_bytes);
  for (const auto& [state, n] : background) {
    out.Gauge("lazypull_background_fetch_layers",
              "Mounted lazy layers by state of their background fetch.", {{"state", state}}, n);
  }
  for (const auto& [backend, n] : mounted_by_backend) {
    out.Gauge("lazypull_mounted_layers", "Lazily mounted layers (snapshots), by backend.",
              {{"backend", backend}}, n);
  }
  out.Counter("lazypull_fuse_adoptions_total",
              "FUSE connections this daemon took over from its predecessor through the FUSE "
              "holder instead of mounting them afresh: per-layer FUSE mounts and, on the EROFS "
              "backend, the blob file system under the lazy EROFS mounts.",
              {}, handover.adoptions);
  out.Counter("lazypull_fuse_resent_requests_total",
              "FUSE requests a dead predecessor had read but not answered, resent by the kernel "
              "to this daemon (FUSE_NOTIFY_RESEND).",
              {}, handover.resent_requests);
  out.Gauge("lazypull_unavailable_layers",
            "Remote layers that could not be re-mounted after a restart.", {}, unavailable);

  if (scheduler_ != nullptr) {
    const nlohmann::json fetch = scheduler_->StatusJson();
    out.Gauge("lazypull_background_requests_in_flight", "Background range requests in flight.", {},
              Num(fetch, "background_requests"));
    out.Gauge("lazypull_on_demand_fetches_in_flight", "On-demand fetches in flight.", {},
              Num(fetch, "on_demand_fetches"));
    out.Gauge("lazypull_link_estimate_bytes_per_second",
              "Measured registry link throughput used to pace background fetches.", {},
              Num(fetch, "link_bytes_per_second"));
    if (double budget = Num(fetch, "background_budget_bytes_per_second"); budget >= 0) {
      out.Gauge("lazypull_background_budget_bytes_per_second",
                "Node-wide bandwidth budget of background fetches.", {}, budget);
    }
  }

  const registry::RegistryStats rs = client_->stats();
  out.Counter("lazypull_registry_retries_total", "Registry requests retried after a failure.", {},
              rs.retries);
  const char* kFallbacks = "lazypull_registry_mirror_fallbacks_total";
  const char* kFallbacksHelp =
      "Requests that went from a mirror to the next host, by reason: error (the mirror failed "
      "or stalled), no_ranges (it answered a range read with the whole blob or other bytes: a "
      "pull-through cache that has not stored the blob yet), skipped (a blob read skipped a "
      "mirror marked no_ranges or bad_bytes for its blob), bad_bytes (bytes it served failed "
      "verification).";
  out.Counter(kFallbacks, kFallbacksHelp, {{"reason", "error"}}, rs.mirror_fallbacks);
  out.Counter(kFallbacks, kFallbacksHelp, {{"reason", "no_ranges"}}, rs.mirror_range_refusals);
  out.Counter(kFallbacks, kFallbacksHelp, {{"reason", "skipped"}}, rs.mirror_skips);
  out.Counter(kFallbacks, kFallbacksHelp, {{"reason", "bad_bytes"}}, rs.mirror_bad_bytes);

  ChunkCacheStats cs;
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_ != nullptr) cs = cache_->stats();
  }
  out.Counter("lazypull_chunk_cache_hits_total", "Chunk reads served from the chunk cache.", {},
              cs.hits);
  out.Counter("lazypull_chunk_cache_misses_total", "Chunk reads that found no stored chunk.", {},
              cs.misses);
  out.Counter("lazypull_chunk_cache_evictions_total",
              "Chunks evicted to keep the cache under max_bytes.", {}, cs.evictions);
  out.Counter("lazypull_chunk_cache_written_bytes_total", "Bytes written into the chunk cache.", {},
              cs.bytes_written);
  out.Counter("lazypull_chunk_cache_corrupt_chunks_total",
              "Stored chunks dropped because they no longer matched their digest.", {},
              cs.corrupt_removed);
  out.Counter("lazypull_chunk_cache_store_errors_total",
              "Fetched chunks that could not be stored (e.g. disk full).", {}, cs.store_errors);
  out.Gauge("lazypull_chunk_cache_stored_bytes", "Bytes of the chunks stored now.", {},
            cs.bytes_stored);
  out.Gauge("lazypull_chunk_cache_chunks", "Chunks stored now.", {}, cs.entries);
  out.Gauge("lazypull_chunk_cache_capacity_bytes", "The chunk cache's max_bytes.", {},
            options_.cache.max_bytes);
  out.Gauge("lazypull_graduated_bytes",
            "Disk bytes of graduated layers' local copies (count against the cache's max_bytes).",
            {}, backend_->LocalBytes());
}

}  // namespace lazypull::remote
