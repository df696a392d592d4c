// LayerReaderStats as status.json shows it.
#include "fetcher/layer_reader/layer_reader.h"

namespace lazypull {

nlohmann::json LayerReaderStats::ToJson() const {
  return {{"layer", layer_id},
          {"bytes_fetched", bytes_fetched},
          {"requests", requests},
          {"chunks_fetched", chunks_fetched},
          {"cache_hits", cache_hits},
          {"cache_misses", cache_misses},
          {"fetch_waits", fetch_waits},
          {"fetch_errors", fetch_errors},
          {"verify_errors", verify_errors},
          {"timeouts", timeouts},
          {"local_bytes", local_bytes},
          {"total_bytes", total_bytes},
          {"local_chunks", local_chunks},
          {"total_chunks", total_chunks},
          {"fetched_percent", fetched_percent()},
          {"bytes_read", bytes_read},
          {"readahead_chunks", readahead_chunks},
          {"readahead_used", readahead_used},
          {"readahead_window", readahead_window},
          {"background_bytes", background_bytes},
          {"batch_chunks", batch_chunks},
          {"batch_used", batch_used},
          {"batch_budget", batch_budget},
          {"ahead_chunks", ahead_chunks},
          {"ahead_used", ahead_used},
          {"demand_fetches", demand_fetches},
          {"prefetch", prefetch},
          {"background", background}};
}

}  // namespace lazypull
