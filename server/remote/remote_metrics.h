// Prometheus metrics of the remote-layer path, read at scrape time from the counters the
// RemoteLayerManager's parts keep anyway (RemoteLayerManager::CollectMetrics, defined in
// remote_metrics.cc).
#ifndef LAZYPULL_SERVER_REMOTE_REMOTE_METRICS_H_
#define LAZYPULL_SERVER_REMOTE_REMOTE_METRICS_H_

#include "fetcher/layer_reader/layer_reader.h"

namespace lazypull::remote {

// Adds the monotonic counters of `from` (a layer being released) to `into`, so node-wide
// totals (fetched bytes, verification failures, ...) keep counting released layers.
void AddRetiredStats(const LayerReaderStats& from, LayerReaderStats& into);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_REMOTE_METRICS_H_
