// ElfPrefetcher: ELF-aware startup prefetch. When a program starts reading a lazy file whose
// first bytes are an ELF header (execve reading a binary, the dynamic loader reading a
// library), it walks what the loader will open next — PT_INTERP and the DT_NEEDED libraries,
// resolved inside the image as ld.so would (elf/dependency_walk.h) — and fetches those files
// whole, in parallel and ahead of the program, so that a start costs about one round trip
// per level of the dependency graph instead of one miss per file and per segment.
//
// Wiring: the ElfPrefetcher is every LayerReader's FileStartObserver
// (LayerReaderOptions::file_start_observer). OnFileStart only queues; the walks run on the
// prefetcher's own threads, read through the image's LayerReaders (cache hit, or a wait for a
// fetch), and fetch with LayerReader::FetchAhead at foreground priority. A walk's reads never
// notify the observer again, and each file starts at most one walk.
//
// The image: a layer can belong to several images, and the file tree a container sees is
// the stack of its image's layers. `stack(layer_id)` (the snapshotter's view, e.g. the newest
// snapshot chain that contains the layer) returns the LayerReaders of that stack, top first,
// the triggering layer among them. Layers of the stack that are not lazy (unpacked by
// containerd) are simply absent: a library found only there is not prefetched (nor needed:
// it is local).
//
// A start can also be announced before any read (PrefetchStart): when an image is pulled (with
// background fetch on: as soon as every layer has a reader, the hint's own stack of preloaded
// readers when the top layer is not mounted yet) or a container's rootfs is prepared on an
// image's layers,
// the image config names the program the container will run
// (Entrypoint + Cmd, found on the config's PATH), so its walk — and the few files the runtime reads
// at creation, /etc/passwd and /etc/group — can run while containerd and runc still set up the
// container. A command overridden at run time (a pod's `command`) makes that walk useless, bounded
// as any walk.
//
// Per round of the walk and per layer, two fetches: first what the walk asks for (file heads,
// the ranges of ELF structures it still misses) together with the last chunk of each new
// file (where the dynamic section and the data the loader relocates first usually sit); then
// the rest of the new files (large files: their segments, see ElfPrefetchOptions). Files
// larger than max_file_bytes are fetched only where the walk reads; a walk fetches at most
// max_walk_bytes of file data.
//
// Files a program names itself: once the walk is done, the walked objects' read-only data
// segments (fetched by the walk) are scanned for absolute paths (elf/embedded_paths.h), and
// the small regular files among them are fetched whole: glibc's configuration, OpenSSL's
// openssl.cnf, Node.js's JavaScript builtins kept outside the binary.
//
// Python: a CPython interpreter being walked (its file name says pythonX.Y) also starts a
// Python import walk of what every interpreter start reads (startup/python_import_walk.h),
// on another thread at once, and a program starting to read a .pyc (the import system
// loading a module) starts a walk of that module's imports, level by level. Files those
// walks have parsed start no walk of their own when the interpreter reads them.
//
// Bounded: at most max_queued walks wait (more triggers are dropped and counted), `threads`
// run at once, the walk itself is bounded (WalkOptions), and remembered files are forgotten
// beyond max_remembered. Untrusted input only reaches the bounded ELF and ld.so.cache parsers.
//
// Thread-safety: all methods are thread-safe. Destruction (or Stop) drops queued walks, stops
// the readers of the walks in progress (only at shutdown: see Stop) and joins the threads.
#ifndef LAZYPULL_FETCHER_STARTUP_ELF_PREFETCHER_H_
#define LAZYPULL_FETCHER_STARTUP_ELF_PREFETCHER_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "fetcher/elf/dependency_walk.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/background_scheduler.h"
#include "fetcher/layer_reader/file_start_observer.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fetcher/startup/python_import_walk.h"
#include "nlohmann/json.hpp"

namespace lazypull::startup {

struct ElfPrefetchOptions {
  // Walks mostly wait for fetches; an interpreter start runs its ELF walk, its Python start
  // walk and the first module walks at once.
  size_t threads = 4;
  size_t max_queued = 64;
  // Files of the walk up to this size (uncompressed) are fetched whole; larger ones only where
  // the walk reads.
  uint64_t max_file_bytes = 256 << 20;
  // Files larger than this are fetched segment by segment once their program headers have
  // arrived, leaving out read-only data segments (neither code nor relocated, and not the
  // first segment, which holds the dynamic symbols and relocations) larger than
  // max_lazy_data_segment: constant data a program reads where it needs it (ICU's 30 MB
  // table library, embedded resources), which a whole-file fetch would move for nothing.
  uint64_t large_file_bytes = 16 << 20;
  uint64_t max_lazy_data_segment = 16 << 20;
  // Uncompressed file bytes one walk may fetch whole.
  uint64_t max_walk_bytes = 1ull << 30;
  // Once a walk ends, the files its objects name in their read-only data (configuration,
  // Node.js's external builtins: elf/embedded_paths.h) that are regular files in the image of
  // at most embedded_file_bytes are fetched whole: at most embedded_files files and
  // embedded_bytes bytes per walk, from at most embedded_scan_bytes of each object's data
  // (only data segments the walk fetched). embedded_files = 0: off.
  size_t embedded_files = 64;
  uint64_t embedded_file_bytes = 1 << 20;
  uint64_t embedded_bytes = 4 << 20;
  uint64_t embedded_scan_bytes = 16 << 20;
  size_t max_remembered = 1 << 16;
  // The node's background fetch (null = none): every walk, from its start to its end, counts
  // as on-demand activity there (BackgroundScheduler::BeginForeground), so no background
  // request starts between a walk's rounds while the walk parses what it fetched. A program's
  // start is what the walks fetch; a background request that starts in such a gap (a whole SOCI
  // span: up to megabytes) would take the link from the walk's next round.
  std::shared_ptr<BackgroundScheduler> background;
  elf::WalkOptions walk;
  PythonWalkOptions python;
};

// Counters, for status.json and tests. Value type.
struct ElfPrefetchStats {
  uint64_t walks_started = 0;
  uint64_t walks_finished = 0;  // including failed ones
  uint64_t walks_dropped = 0;   // queue full or stopping
  uint64_t not_elf = 0;         // triggers whose file was no ELF file
  uint64_t objects = 0;         // executables and libraries walked, over all walks
  uint64_t rounds = 0;          // the walks' read rounds (their serial depth), summed
  uint64_t chunks_ahead = 0;    // chunks FetchAhead started fetching
  uint64_t problems = 0;        // libraries not found, unreadable or malformed
  uint64_t start_hints = 0;     // PrefetchStart hints that named a program or files
  uint64_t embedded_files = 0;  // files named in walked objects' data, fetched
  uint64_t python_walks = 0;    // Python import walks (interpreter starts and .pyc reads)
  uint64_t python_walks_finished = 0;
  uint64_t python_files = 0;   // files they fetched
  uint64_t python_rounds = 0;  // their rounds, summed
  uint64_t python_problems = 0;
  std::string last_executable;  // path of the last walk's executable
  uint64_t last_objects = 0;
  uint64_t last_rounds = 0;
  nlohmann::json ToJson() const;
};

// What a container of an image will start: candidate paths of its executable (the first that
// is a regular file in the image wins) and small files to fetch whole.
struct StartHint {
  std::vector<std::string> executables;
  std::vector<std::string> files{};
  std::vector<std::string> args{};  // the program's arguments (argv[1:])
  std::string working_dir = "/";
  // The LayerReaders of the image, top first, the hinted layer among them, when the hint
  // comes before they are all mounted (e.g. from preloads at a pull's first layer); empty =
  // the LayerStackFn's stack of the hinted layer.
  std::vector<std::shared_ptr<LayerReader>> stack{};
};

// The LayerReaders of the image stack that holds layer `layer_id`, top first; empty when
// the layer is unknown (no longer mounted).
using LayerStackFn =
    std::function<std::vector<std::shared_ptr<LayerReader>>(const std::string& layer_id)>;

class ElfPrefetcher final : public FileStartObserver {
 public:
  // Starts options.threads threads. `stack` is called on them, never under a lock of the
  // prefetcher.
  ElfPrefetcher(ElfPrefetchOptions options, LayerStackFn stack);
  ~ElfPrefetcher() override;
  ElfPrefetcher(const ElfPrefetcher&) = delete;
  ElfPrefetcher& operator=(const ElfPrefetcher&) = delete;

  // FileStartObserver: queues a walk for an ELF or .pyc file (or a file whose head was not
  // copied) not walked before. Returns at once.
  void OnFileStart(const std::string& layer_id, format::Ino ino, std::string_view head) override;

  // Queues a walk from the executable `hint` names, in the image stack of `layer_id` (its
  // top layer). `hint` runs on a prefetcher thread and may block (e.g. fetch the image
  // config); an empty hint does nothing. Returns at once.
  void PrefetchStart(const std::string& layer_id, std::function<StartHint()> hint);

  // Drops queued walks, stops (LayerReader::Stop) the readers of the walks in progress so
  // their waits end, and joins the threads. For shutdown, after the layers were unmounted.
  // Idempotent.
  void Stop();

  // Blocks until no walk is queued or running, or `timeout` passed. Returns whether idle.
  bool WaitIdle(std::chrono::milliseconds timeout);

  ElfPrefetchStats Stats() const;

 private:
  enum class JobKind { kFile, kHint, kPythonStart };
  struct Job {
    JobKind kind = JobKind::kFile;
    std::string layer_id;
    format::Ino ino = 0;              // kFile
    bool elf = false;                 // kFile: the trigger's head showed an ELF magic
    bool pyc = false;                 // kFile: ... or a .pyc magic (neither: not copied)
    std::function<StartHint()> hint;  // kHint
    PythonWalkStart python;           // kPythonStart
    // kPythonStart: the stack of the walk that queued it (a hint's own stack, before the
    // image's top layer is mounted); empty = stack_(layer_id).
    std::vector<std::shared_ptr<LayerReader>> stack;
  };
  // Thread `slot` of threads_.
  void Work(size_t slot);
  void RunWalk(const Job& job, size_t slot);
  // Starts fetching the segments of large ELF file `ino` of `size` bytes that its head
  // (program headers) shows and ElfPrefetchOptions keeps, charged to `budget`. Returns the
  // chunks FetchAhead started.
  size_t FetchSegments(LayerReader& reader, format::Ino ino, uint64_t size, std::string_view head,
                       uint64_t& budget) const;
  void RunPythonWalk(const Job& job, const std::vector<std::shared_ptr<LayerReader>>& stack,
                     PythonWalkStart start);
  // Queues, ahead of the others, the Python start walk of `start.interpreter` in the stack of
  // `layer_id`, once per interpreter and layer.
  void QueuePythonStart(const std::string& layer_id, PythonWalkStart start,
                        std::vector<std::shared_ptr<LayerReader>> stack);
  // Remembers (layer_id, ino) as walked or read by a walk; false if it was already.
  bool RememberLocked(const std::string& layer_id, format::Ino ino);
  bool Remember(const std::string& layer_id, format::Ino ino);

  const ElfPrefetchOptions options_;
  const LayerStackFn stack_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // queue_ or stopping_ changed, a walk ended
  std::deque<Job> queue_;
  size_t running_ = 0;
  bool stopping_ = false;
  absl::flat_hash_set<std::string> seen_;  // layer_id + '\n' + ino
  // Readers of the walks in progress (for Stop), by thread slot.
  std::vector<std::vector<std::shared_ptr<LayerReader>>> active_;
  ElfPrefetchStats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace lazypull::startup

#endif  // LAZYPULL_FETCHER_STARTUP_ELF_PREFETCHER_H_
