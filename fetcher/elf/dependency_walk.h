// WalkDependencies: from an executable inside an image, the files the dynamic loader will
// open to start it: the executable, its PT_INTERP, and every DT_NEEDED library, recursively,
// breadth first, resolved as ld.so would (LibraryResolver) against the image's own
// /etc/ld.so.cache, RUNPATH/RPATH and default directories.
//
// Built for prefetch on a lazy read's miss path: all reads go through one BatchReader call
// per round, and a round asks for everything the walk can know it needs at that point (the
// heads of every file of a dependency level, the missing ranges of each ELF parse), so the
// caller fetches each round in parallel and the walk's serial depth is about two rounds per
// dependency level instead of one miss per file. Typical use, on the prefetch executor and
// never on the FUSE thread of the triggering read:
//   auto walk = WalkDependencies(tree, "/usr/bin/python3.11", reader);
//   for each walk->objects[i]: fetch objects[i].info.LoadRanges() of objects[i].real_path
//   (libraries are mapped whole, so fetching each whole file is as good and simpler).
// The tree is the image's merged view: an OverlayFileTree of LayerIndexFileTree (lazy layers)
// and LocalFileTree (unpacked parents), top layer first; the executable's path in it is
// "/" + LayerIndex::Path(ino) of the file that missed. The root may also be a library (a
// dlopen'd extension module): its needs are walked the same way. A BatchReader that serves
// from the lazy layers (cache hit or fetch, foreground priority but behind the reads that
// wait) is the caller's; the walk never blocks anything but itself. Keep one parsed LdSoCache
// per image (WalkOptions::ld_so_cache) when walking more than once.
//
// Bounded: at most max_objects files, max_depth levels, max_rounds_per_object parse rounds
// and max_candidates wrong-ABI files skipped per name; objects are matched by name, soname
// and resolved path, so a DT_NEEDED loop (A needs B needs A) ends. Hitting a bound sets
// `truncated` and returns what was found.
//
// Errors: the executable's own problems are the returned status (NotFound if it is not a
// regular file in the tree, InvalidArgument "not an ELF file" for scripts and data, the
// parser's DataLoss/ResourceExhausted, the reader's errors). A library that cannot be
// found, read or parsed is listed in `problems` and the walk goes on without it.
//
// Thread-safety: a pure function; `read` is called from the calling thread only.
#ifndef LAZYPULL_FETCHER_ELF_DEPENDENCY_WALK_H_
#define LAZYPULL_FETCHER_ELF_DEPENDENCY_WALK_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/elf/elf_parser.h"
#include "fetcher/elf/file_tree.h"
#include "fetcher/elf/ld_so_cache.h"
#include "lazypull/blob_reader.h"

namespace lazypull::elf {

struct WalkOptions {
  size_t max_objects = 256;        // the executable, its interpreter and libraries
  int max_depth = 16;              // DT_NEEDED levels below the executable
  uint64_t head_bytes = 64 << 10;  // first read of each file: header, program headers, often
                                   // the dynamic section and its strings too
  int max_rounds_per_object = 6;
  size_t max_candidates = 4;
  // The image's loader cache, already parsed (e.g. kept per image by the caller; not owned,
  // must outlive the call). When null, ld_so_cache_path is read in the first round beside
  // the executable's head and parsed; "" skips the cache altogether.
  const LdSoCache* ld_so_cache = nullptr;
  std::string ld_so_cache_path = "/etc/ld.so.cache";
  uint64_t max_ld_so_cache_bytes = 16 << 20;
  ElfLimits elf_limits;
};

struct WalkObject {
  std::string path;       // as ld.so names it: PT_INTERP, search directory + name, ...
  std::string real_path;  // symlinks resolved: the file whose bytes to fetch
  uint64_t size = 0;
  int depth = 0;          // 0 the executable; 1 its interpreter and direct DT_NEEDED; ...
  int loader = -1;        // index in WalkResult::objects of the object that first needed it
  std::string needed_as;  // the DT_NEEDED name, "PT_INTERP", or "" for the executable
  ElfInfo info;           // complete
};

struct WalkResult {
  std::vector<WalkObject> objects;    // breadth first; objects[0] is the executable
  std::vector<std::string> problems;  // libraries not found, unreadable or malformed
  bool truncated = false;             // a bound of WalkOptions stopped the walk
  bool used_ld_so_cache = false;      // a cache was given, or read and parsed
  int rounds = 0;                     // BatchReader calls made: the walk's serial depth
};

struct ReadRequest {
  std::string path;  // a real_path in the tree
  ByteRange range;   // inside the file
};
// Returns one result per request, in order, each exactly range.length bytes. May serve the
// requests in parallel (and should: they are independent).
using BatchReader =
    std::function<std::vector<absl::StatusOr<std::string>>(std::span<const ReadRequest>)>;

absl::StatusOr<WalkResult> WalkDependencies(const FileTree& tree, std::string_view executable,
                                            const BatchReader& read,
                                            const WalkOptions& options = {});

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_DEPENDENCY_WALK_H_
