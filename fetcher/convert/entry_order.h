// OrderEntries: the order a lazy-format writer emits a layer's tar entries in when some files
// are prioritized, as stargz-snapshotter's reference builder orders them (estargz
// sortEntries): each prioritized path comes after its parent directories and, for a hardlink,
// after its target; then every other entry in stream order.
//
// Shared by the eStargz writer (which puts the prefetch landmark between the two parts) and
// the zstd:chunked writer (which records the end of the first part as the prefetch range).
#ifndef LAZYPULL_FETCHER_CONVERT_ENTRY_ORDER_H_
#define LAZYPULL_FETCHER_CONVERT_ENTRY_ORDER_H_

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "fetcher/tar/tar_entry.h"

namespace lazypull::convert {

struct EntryOrderOptions {
  // Paths (absolute or relative to the layer root, cleaned as tar::CleanEntryName does) to put
  // first, in this order. Duplicates and paths already pulled in as a parent are no-ops.
  std::vector<std::string> prioritized;
  // Clean names that are never emitted (eStargz: an old TOC and old landmarks).
  std::set<std::string> drop_names;
};

struct EntryOrder {
  // Indices into the entries, in write order. `prioritized` holds the prioritized files with
  // their parents and hardlink targets; `rest` the other entries in stream order (PAX global
  // headers stay in `rest` at their place). Of several entries with one name only the last is
  // kept, as extraction would leave it.
  std::vector<size_t> prioritized;
  std::vector<size_t> rest;
  // Prioritized paths with no entry of that name in the layer, in input order.
  std::vector<std::string> missing;
};

// Pure function of its arguments; thread-safe. Never fails: a missing path is reported in
// EntryOrder::missing, a parent directory the tar does not list is skipped (tar allows it),
// and hardlink cycles are broken.
EntryOrder OrderEntries(const std::vector<tar::TarEntry>& entries,
                        const EntryOrderOptions& options);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_ENTRY_ORDER_H_
