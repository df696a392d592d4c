#include "fetcher/startup/elf_prefetcher.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <utility>

#include "base/logging.h"
#include "fetcher/elf/elf_parser.h"
#include "fetcher/elf/embedded_paths.h"
#include "fetcher/elf/layer_index_file_tree.h"
#include "fetcher/elf/overlay_file_tree.h"
#include "fetcher/python/module_finder.h"
#include "fetcher/python/pyc_imports.h"
#include "fmt/format.h"

namespace lazypull::startup {

namespace {

// Files a start hint names (passwd, group) are fetched whole only up to this size.
constexpr uint64_t kMaxHintFileBytes = 1 << 20;
// Directory entries a walk looks at per directory and layer.
constexpr size_t kMaxListed = 4096;

std::string SeenKey(const std::string& layer_id, format::Ino ino) {
  return fmt::format("{}\n{}", layer_id, ino);
}

// One walk's view of the image: the merged tree over the stack's indexes, and where each
// path's bytes are read.
class StackView {
 public:
  explicit StackView(std::vector<std::shared_ptr<LayerReader>> readers)
      : readers_(std::move(readers)) {
    trees_.reserve(readers_.size());
    for (const auto& r : readers_) trees_.emplace_back(&r->index());
    std::vector<const elf::FileTree*> layers;
    for (const auto& t : trees_) layers.push_back(&t);
    overlay_.emplace(std::move(layers));
  }
  const elf::FileTree& tree() const { return *overlay_; }

  struct Located {
    LayerReader* reader = nullptr;
    format::Ino ino = 0;
    uint64_t size = 0;
  };
  // The names in directory `dir` (absolute, symlink-free) over all layers (whiteouts and
  // opaque directories are not applied: a name too many is only a file not prefetched).
  std::vector<std::string> ListDir(std::string_view dir) const {
    std::string_view rel = dir;
    while (!rel.empty() && rel.front() == '/') rel.remove_prefix(1);
    absl::flat_hash_set<std::string> names;
    std::vector<std::string> out;
    for (const auto& r : readers_) {
      const format::LayerIndex& index = r->index();
      std::optional<format::Ino> ino =
          rel.empty() ? std::optional<format::Ino>(1) : index.LookupPath(rel);
      if (!ino) continue;
      const size_t n = std::min<size_t>(index.ChildCount(*ino), kMaxListed);
      for (size_t i = 0; i < n; ++i) {
        std::string name(index.Name(index.Child(*ino, i).ino));
        if (names.insert(name).second) out.push_back(std::move(name));
      }
    }
    return out;
  }

  // The layer and inode whose bytes `path` (absolute, symlink-free) shows.
  absl::StatusOr<Located> Locate(std::string_view path) const {
    absl::StatusOr<size_t> layer = overlay_->LayerOf(path);
    if (!layer.ok()) return layer.status();
    LayerReader* reader = readers_[*layer].get();
    std::string_view rel = path;
    while (!rel.empty() && rel.front() == '/') rel.remove_prefix(1);
    std::optional<format::Ino> ino = reader->index().LookupPath(rel);
    std::optional<format::InodeAttr> attr;
    if (ino) attr = reader->index().GetAttr(*ino);
    if (!attr || (attr->mode & S_IFMT) != S_IFREG) {
      return absl::NotFoundError(fmt::format("{} is not a regular file", path));
    }
    return Located{reader, *ino, attr->size};
  }

 private:
  std::vector<std::shared_ptr<LayerReader>> readers_;
  std::vector<elf::LayerIndexFileTree> trees_;
  std::optional<elf::OverlayFileTree> overlay_;
};

struct EmbeddedFetch {
  uint64_t files = 0;
  uint64_t bytes = 0;
};

// Fetches the small regular files the walked objects name in their read-only data segments
// (the walk fetched those segments: reading them waits for that fetch at most).
EmbeddedFetch FetchEmbeddedFiles(const StackView& view, const elf::WalkResult& walk,
                                 const ElfPrefetchOptions& options) {
  constexpr uint32_t kPfWrite = 2, kPfExec = 1;
  EmbeddedFetch done;
  if (options.embedded_files == 0) return done;
  absl::flat_hash_set<std::string> candidates_seen;
  std::vector<std::string> candidates;
  for (const elf::WalkObject& object : walk.objects) {
    absl::StatusOr<StackView::Located> loc = view.Locate(object.real_path);
    if (!loc.ok()) continue;
    uint64_t scan_budget = options.embedded_scan_bytes;
    for (size_t i = 1; i < object.info.loads.size(); ++i) {
      const elf::LoadSegment& seg = object.info.loads[i];
      // Read-only data the walk fetched (ElfInfo::LoadRanges left larger ones out).
      if ((seg.flags & (kPfWrite | kPfExec)) != 0 || seg.file_size == 0) continue;
      if (seg.file_size > options.max_lazy_data_segment || seg.file_size > scan_budget) continue;
      if (seg.offset >= loc->size) continue;
      scan_budget -= seg.file_size;
      std::string data(std::min(seg.file_size, loc->size - seg.offset), '\0');
      absl::StatusOr<size_t> n = loc->reader->Read(loc->ino, seg.offset, data.data(), data.size());
      if (!n.ok()) continue;
      data.resize(*n);
      for (std::string& path : elf::EmbeddedPaths(data)) {
        if (candidates_seen.insert(path).second) candidates.push_back(std::move(path));
      }
    }
  }
  std::map<LayerReader*, std::vector<LayerReader::FileExtent>> extents;
  // What the walk itself read is not counted again.
  absl::flat_hash_set<std::string> fetched;
  for (const elf::WalkObject& object : walk.objects) fetched.insert(object.real_path);
  if (absl::StatusOr<elf::ResolvedPath> cache =
          elf::ResolvePath(view.tree(), options.walk.ld_so_cache_path);
      cache.ok()) {
    fetched.insert(cache->path);
  }
  for (const std::string& path : candidates) {
    if (done.files >= options.embedded_files) break;
    absl::StatusOr<elf::ResolvedPath> resolved = elf::ResolvePath(view.tree(), path);
    if (!resolved.ok() || resolved->node.kind != elf::FileNode::Kind::kRegular) continue;
    if (!fetched.insert(resolved->path).second) continue;
    absl::StatusOr<StackView::Located> loc = view.Locate(resolved->path);
    if (!loc.ok() || loc->size == 0 || loc->size > options.embedded_file_bytes ||
        done.bytes + loc->size > options.embedded_bytes) {
      continue;
    }
    extents[loc->reader].push_back({loc->ino, 0, loc->size});
    ++done.files;
    done.bytes += loc->size;
  }
  for (auto& [reader, e] : extents) reader->FetchAhead(e);
  return done;
}

}  // namespace

nlohmann::json ElfPrefetchStats::ToJson() const {
  return {{"walks_started", walks_started},
          {"walks_finished", walks_finished},
          {"walks_dropped", walks_dropped},
          {"not_elf", not_elf},
          {"objects", objects},
          {"rounds", rounds},
          {"chunks_ahead", chunks_ahead},
          {"problems", problems},
          {"start_hints", start_hints},
          {"embedded_files", embedded_files},
          {"python_walks", python_walks},
          {"python_walks_finished", python_walks_finished},
          {"python_files", python_files},
          {"python_rounds", python_rounds},
          {"python_problems", python_problems},
          {"last_executable", last_executable},
          {"last_objects", last_objects},
          {"last_rounds", last_rounds}};
}

ElfPrefetcher::ElfPrefetcher(ElfPrefetchOptions options, LayerStackFn stack)
    : options_(std::move(options)), stack_(std::move(stack)) {
  const size_t n = std::max<size_t>(1, options_.threads);
  active_.resize(n);
  threads_.reserve(n);
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this, i] { Work(i); });
}

ElfPrefetcher::~ElfPrefetcher() { Stop(); }

void ElfPrefetcher::Stop() {
  std::vector<std::shared_ptr<LayerReader>> readers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    stats_.walks_dropped += queue_.size();
    queue_.clear();
    for (const auto& walk : active_) readers.insert(readers.end(), walk.begin(), walk.end());
  }
  cv_.notify_all();
  for (const auto& r : readers) r->Stop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

bool ElfPrefetcher::RememberLocked(const std::string& layer_id, format::Ino ino) {
  if (seen_.size() >= options_.max_remembered) seen_.clear();
  return seen_.insert(SeenKey(layer_id, ino)).second;
}

bool ElfPrefetcher::Remember(const std::string& layer_id, format::Ino ino) {
  std::lock_guard<std::mutex> lock(mu_);
  return RememberLocked(layer_id, ino);
}

void ElfPrefetcher::OnFileStart(const std::string& layer_id, format::Ino ino,
                                std::string_view head) {
  const bool elf = !head.empty() && elf::IsElfMagic(head);
  const bool pyc = !head.empty() && !elf && python::IsPycMagic(head);
  if (!head.empty() && !elf && !pyc) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    if (!RememberLocked(layer_id, ino)) return;
    if (queue_.size() >= options_.max_queued) {
      ++stats_.walks_dropped;
      return;
    }
    Job job;
    job.layer_id = layer_id;
    job.ino = ino;
    job.elf = elf;
    job.pyc = pyc;
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void ElfPrefetcher::QueuePythonStart(const std::string& layer_id, PythonWalkStart start,
                                     std::vector<std::shared_ptr<LayerReader>> stack) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    if (seen_.size() >= options_.max_remembered) seen_.clear();
    if (!seen_.insert(fmt::format("{}\npython\n{}", layer_id, start.interpreter)).second) return;
    if (queue_.size() >= options_.max_queued) {
      ++stats_.walks_dropped;
      return;
    }
    Job job;
    job.kind = JobKind::kPythonStart;
    job.layer_id = layer_id;
    job.python = std::move(start);
    job.stack = std::move(stack);
    queue_.push_front(std::move(job));
  }
  cv_.notify_one();
}

void ElfPrefetcher::PrefetchStart(const std::string& layer_id, std::function<StartHint()> hint) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    if (queue_.size() >= options_.max_queued) {
      ++stats_.walks_dropped;
      return;
    }
    Job job;
    job.kind = JobKind::kHint;
    job.layer_id = layer_id;
    job.hint = std::move(hint);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

bool ElfPrefetcher::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return queue_.empty() && running_ == 0; });
}

ElfPrefetchStats ElfPrefetcher::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ElfPrefetcher::Work(size_t slot) {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    std::optional<BackgroundScheduler::ForegroundActivity> hold;
    if (options_.background != nullptr) hold.emplace(options_.background->BeginForeground());
    // A walk must never take the daemon down: every failure is a log line.
    try {
      RunWalk(job, slot);
    } catch (const std::exception& e) {
      LogError("ELF prefetch failed", {{"layer", job.layer_id}, {"error", e.what()}});
    }
    hold.reset();  // before the walk counts as ended (WaitIdle)
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      active_[slot].clear();
    }
    cv_.notify_all();
  }
}

void ElfPrefetcher::RunWalk(const Job& job, size_t slot) {
  // A hint may block (the image config, other layers' indexes) and may bring its own stack.
  StartHint hint;
  if (job.kind == JobKind::kHint) {
    hint = job.hint();
    if (hint.executables.empty() && hint.files.empty()) return;
  }
  std::vector<std::shared_ptr<LayerReader>> stack = !hint.stack.empty()  ? std::move(hint.stack)
                                                    : !job.stack.empty() ? job.stack
                                                                         : stack_(job.layer_id);
  auto self = std::find_if(stack.begin(), stack.end(),
                           [&](const auto& r) { return r->layer_id() == job.layer_id; });
  if (self == stack.end()) return;
  LayerReader& reader = **self;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    active_[slot] = stack;
  }
  if (job.kind == JobKind::kPythonStart) {
    RunPythonWalk(job, stack, job.python);
    return;
  }
  std::string executable;
  if (job.kind == JobKind::kHint) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.start_hints;
    }
    StackView view(stack);
    std::map<LayerReader*, std::vector<LayerReader::FileExtent>> files;
    for (const std::string& f : hint.files) {
      absl::StatusOr<elf::ResolvedPath> resolved = elf::ResolvePath(view.tree(), f);
      if (!resolved.ok()) continue;
      absl::StatusOr<StackView::Located> loc = view.Locate(resolved->path);
      if (loc.ok() && loc->size <= kMaxHintFileBytes) {
        files[loc->reader].push_back({loc->ino, 0, loc->size});
      }
    }
    for (auto& [r, extents] : files) r->FetchAhead(extents);
    for (const std::string& candidate : hint.executables) {
      absl::StatusOr<elf::ResolvedPath> resolved = elf::ResolvePath(view.tree(), candidate);
      if (resolved.ok() && resolved->node.kind == elf::FileNode::Kind::kRegular) {
        executable = resolved->path;
        break;
      }
    }
    if (executable.empty()) return;
  } else {
    bool elf = job.elf;
    bool pyc = job.pyc;
    if (!elf && !pyc) {
      char magic[4];
      absl::StatusOr<size_t> n = reader.Read(job.ino, 0, magic, sizeof(magic));
      const std::string_view head(magic, n.ok() ? *n : 0);
      elf = elf::IsElfMagic(head);
      pyc = !elf && python::IsPycMagic(head);
    }
    if (pyc) {
      PythonWalkStart start;
      start.pycs.push_back("/" + reader.index().Path(job.ino));
      RunPythonWalk(job, stack, std::move(start));
      return;
    }
    if (!elf) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.not_elf;
      return;
    }
  }
  if (executable.empty()) executable = "/" + reader.index().Path(job.ino);
  if (python::InterpreterVersion(executable.substr(executable.rfind('/') + 1))) {
    PythonWalkStart start;
    start.interpreter = executable;
    start.argv = hint.args;
    start.working_dir = hint.working_dir;
    QueuePythonStart(job.layer_id, std::move(start), stack);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.walks_started;
  }
  const auto start = std::chrono::steady_clock::now();
  StackView view(stack);
  // Files this walk has fetched whole (or decided not to), by reader and inode.
  std::map<std::pair<LayerReader*, format::Ino>, bool> planned;
  // Large files whose segments are planned when their head arrives.
  std::set<std::pair<LayerReader*, format::Ino>> large;
  uint64_t budget = options_.max_walk_bytes;
  uint64_t chunks_ahead = 0;

  elf::BatchReader batch = [&](std::span<const elf::ReadRequest> requests) {
    std::vector<absl::StatusOr<std::string>> out(requests.size(), absl::UnknownError("not read"));
    std::vector<std::optional<StackView::Located>> where(requests.size());
    // Phase 1 (per layer): what the walk asks for, plus the last chunk of each new file;
    // phase 2: the rest of the new files.
    std::map<LayerReader*, std::vector<LayerReader::FileExtent>> first, rest;
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::StatusOr<StackView::Located> loc = view.Locate(requests[i].path);
      if (!loc.ok()) {
        out[i] = loc.status();
        continue;
      }
      where[i] = *loc;
      LayerReader* r = loc->reader;
      const ByteRange& range = requests[i].range;
      first[r].push_back({loc->ino, range.offset, range.length});
      auto [it, fresh] = planned.try_emplace({r, loc->ino}, false);
      if (!fresh) continue;
      // The walk reads this file itself: its first read must not start another walk.
      Remember(r->layer_id(), loc->ino);
      if (loc->size == 0 || loc->size > options_.max_file_bytes || loc->size > budget) continue;
      if (loc->size > options_.large_file_bytes) {
        large.insert({r, loc->ino});  // its segments, once the head has arrived (below)
        continue;
      }
      budget -= loc->size;
      it->second = true;
      std::span<const format::Chunk> chunks = r->index().Chunks(loc->ino);
      if (!chunks.empty()) {
        const format::Chunk& last = chunks.back();
        first[r].push_back({loc->ino, last.file_offset, last.length});
      }
      rest[r].push_back({loc->ino, 0, loc->size});
    }
    // What the round reads, one request per file: a round waits for all of it, and a large
    // library's segments stream alongside (FetchSegments) on a connection of their own, with
    // which one multi-range request would share the link half and half.
    for (auto& [r, extents] : first) {
      std::stable_sort(extents.begin(), extents.end(),
                       [](const auto& a, const auto& b) { return a.ino < b.ino; });
      for (size_t b = 0; b < extents.size();) {
        size_t e = b;
        while (e < extents.size() && extents[e].ino == extents[b].ino) ++e;
        chunks_ahead += r->FetchAhead(std::span(extents).subspan(b, e - b));
        b = e;
      }
    }
    for (auto& [r, extents] : rest) chunks_ahead += r->FetchAhead(extents);
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!where[i]) continue;
      const ByteRange& range = requests[i].range;
      std::string buf(range.length, '\0');
      absl::StatusOr<size_t> n =
          where[i]->reader->Read(where[i]->ino, range.offset, buf.data(), buf.size());
      if (!n.ok()) {
        out[i] = n.status();
        continue;
      }
      buf.resize(*n);
      if (range.offset == 0 && large.erase({where[i]->reader, where[i]->ino}) > 0) {
        chunks_ahead +=
            FetchSegments(*where[i]->reader, where[i]->ino, where[i]->size, buf, budget);
        planned[{where[i]->reader, where[i]->ino}] = true;
      }
      out[i] = std::move(buf);
    }
    return out;
  };

  absl::StatusOr<elf::WalkResult> walk =
      elf::WalkDependencies(view.tree(), executable, batch, options_.walk);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const EmbeddedFetch embedded =
      walk.ok() ? FetchEmbeddedFiles(view, *walk, options_) : EmbeddedFetch{};
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.walks_finished;
  stats_.embedded_files += embedded.files;
  stats_.chunks_ahead += chunks_ahead;
  stats_.last_executable = executable;
  if (!walk.ok()) {
    stats_.last_objects = 0;
    stats_.last_rounds = 0;
    LogDebug("ELF prefetch: no walk",
             {{"layer", job.layer_id}, {"file", executable}, {"error", walk.status().ToString()}});
    return;
  }
  stats_.objects += walk->objects.size();
  stats_.rounds += walk->rounds;
  stats_.problems += walk->problems.size();
  stats_.last_objects = walk->objects.size();
  stats_.last_rounds = walk->rounds;
  LogDebug("ELF prefetch", {{"layer", job.layer_id},
                            {"file", executable},
                            {"objects", walk->objects.size()},
                            {"rounds", walk->rounds},
                            {"chunks_ahead", chunks_ahead},
                            {"embedded_files", embedded.files},
                            {"embedded_bytes", embedded.bytes},
                            {"problems", walk->problems},
                            {"truncated", walk->truncated},
                            {"ms", ms}});
}

size_t ElfPrefetcher::FetchSegments(LayerReader& reader, format::Ino ino, uint64_t size,
                                    std::string_view head, uint64_t& budget) const {
  absl::StatusOr<elf::ElfInfo> info = elf::ParseElf(head, size);
  if (!info.ok() || !info->have_program_headers) return 0;
  // What the walk reads next (PT_DYNAMIC, near the end of a library) goes first, in a request
  // of its own: in blob order behind megabytes of segments, it would hold the walk's next
  // round (the library's DT_NEEDED) until the whole file has arrived, and with it every
  // library below this one.
  std::vector<LayerReader::FileExtent> next;
  for (const ByteRange& range : info->missing) next.push_back({ino, range.offset, range.length});
  size_t fetched = reader.FetchAhead(next);
  std::vector<LayerReader::FileExtent> extents;
  for (const ByteRange& range : info->LoadRanges(options_.max_lazy_data_segment)) {
    if (range.length > budget) break;
    budget -= range.length;
    extents.push_back({ino, range.offset, range.length});
  }
  return fetched + reader.FetchAhead(extents);
}

void ElfPrefetcher::RunPythonWalk(const Job& job,
                                  const std::vector<std::shared_ptr<LayerReader>>& stack,
                                  PythonWalkStart start) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.python_walks;
  }
  const auto begin = std::chrono::steady_clock::now();
  StackView view(stack);
  ListDirFn list_dir = [&](std::string_view dir) { return view.ListDir(dir); };
  PythonFetchFn fetch = [&](std::span<const PythonFetch> files) {
    std::vector<absl::StatusOr<std::string>> out(files.size(), std::string());
    std::vector<std::optional<StackView::Located>> where(files.size());
    std::map<LayerReader*, std::vector<LayerReader::FileExtent>> extents;
    for (size_t i = 0; i < files.size(); ++i) {
      absl::StatusOr<StackView::Located> loc = view.Locate(files[i].path);
      if (!loc.ok()) {
        out[i] = loc.status();
        continue;
      }
      where[i] = *loc;
      if (loc->size > 0) extents[loc->reader].push_back({loc->ino, 0, loc->size});
      // The walk parses what it reads: the interpreter's own read of it starts no walk.
      if (files[i].read) Remember(loc->reader->layer_id(), loc->ino);
    }
    for (auto& [r, e] : extents) r->FetchAhead(e);
    for (size_t i = 0; i < files.size(); ++i) {
      if (!where[i] || !files[i].read) continue;
      std::string buf(where[i]->size, '\0');
      absl::StatusOr<size_t> n = where[i]->reader->Read(where[i]->ino, 0, buf.data(), buf.size());
      if (!n.ok()) {
        out[i] = n.status();
        continue;
      }
      buf.resize(*n);
      out[i] = std::move(buf);
    }
    return out;
  };
  PythonWalkResult walk = WalkPythonImports(view.tree(), list_dir, fetch, start, options_.python);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.python_walks_finished;
    stats_.python_files += walk.files;
    stats_.python_rounds += walk.rounds;
    stats_.python_problems += walk.problems.size();
  }
  LogDebug("Python prefetch",
           {{"layer", job.layer_id},
            {"from", start.interpreter.empty() ? start.pycs.front() : start.interpreter},
            {"files", walk.files},
            {"bytes", walk.bytes},
            {"parsed", walk.modules_parsed},
            {"rounds", walk.rounds},
            {"problems", walk.problems},
            {"truncated", walk.truncated},
            {"ms", ms}});
}

}  // namespace lazypull::startup
