#include "fetcher/elf/dependency_walk.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "fetcher/elf/abi.h"
#include "fetcher/elf/ld_so_cache.h"
#include "fetcher/elf/library_resolver.h"
#include "fmt/format.h"

namespace lazypull::elf {
namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// One file being parsed in the current level.
struct Pending {
  WalkObject object;
  std::vector<ResolvedLibrary> candidates;  // the rest after the current one
  size_t next_candidate = 0;
  std::unique_ptr<FileBytes> bytes;
  int rounds = 0;
  bool done = false;    // parsed, compatible: becomes a WalkObject
  bool failed = false;  // reported in problems
};

class Walker {
 public:
  Walker(const FileTree& tree, const BatchReader& read, const WalkOptions& options)
      : tree_(tree), read_(read), options_(options) {}

  absl::StatusOr<WalkResult> Run(std::string_view executable);

 private:
  // Parses and reads until every pending object is done or failed. For the executable
  // (level 0) a failure is the walk's error.
  absl::Status RunLevel(std::vector<Pending>& level, bool is_root);
  // The next level: PT_INTERP of the executable and the DT_NEEDED of `first`..end.
  std::vector<Pending> NextLevel(size_t first);
  std::vector<LoaderObject> ChainOf(size_t index) const;
  // Moves `p` to its next candidate; false when there is none.
  bool NextCandidate(Pending& p);
  bool Known(const std::string& real_path) const;

  const FileTree& tree_;
  const BatchReader& read_;
  const WalkOptions& options_;
  WalkResult result_;
  std::optional<LdSoCache> cache_;
  std::optional<ResolvedPath> cache_file_;
  std::unique_ptr<LibraryResolver> resolver_;
  absl::flat_hash_map<std::string, size_t> by_name_;  // needed names and sonames → object
  absl::flat_hash_set<std::string> real_paths_;       // of objects and pending files
};

bool Walker::Known(const std::string& real_path) const { return real_paths_.contains(real_path); }

bool Walker::NextCandidate(Pending& p) {
  while (p.next_candidate < p.candidates.size()) {
    ResolvedLibrary& c = p.candidates[p.next_candidate++];
    if (Known(c.real_path)) continue;
    real_paths_.insert(c.real_path);
    p.object.path = std::move(c.path);
    p.object.real_path = std::move(c.real_path);
    p.object.size = c.size;
    p.bytes = std::make_unique<FileBytes>(p.object.size);
    p.rounds = 0;
    return true;
  }
  return false;
}

absl::Status Walker::RunLevel(std::vector<Pending>& level, bool is_root) {
  bool read_cache = is_root && cache_file_.has_value();
  for (;;) {
    std::vector<ReadRequest> requests;
    std::vector<size_t> owner;  // index in `level` per request; SIZE_MAX = ld.so.cache
    for (size_t i = 0; i < level.size(); ++i) {
      Pending& p = level[i];
      while (!p.done && !p.failed) {
        if (p.bytes->bytes_held() == 0 && p.object.size > 0 && p.rounds == 0) {
          requests.push_back(
              {p.object.real_path, {0, std::min(p.object.size, options_.head_bytes)}});
          owner.push_back(i);
          ++p.rounds;
          break;
        }
        auto info = ParseElf(*p.bytes, options_.elf_limits);
        if (info.ok() && info->complete() && !is_root &&
            !CompatibleElf(result_.objects[0].info, *info)) {
          // ld.so skips a library of another class or machine and searches on.
          if (NextCandidate(p)) continue;
          info = absl::FailedPreconditionError("ELF class or machine differs from the executable");
        }
        if (!info.ok()) {
          if (is_root) {
            return absl::Status(info.status().code(),
                                fmt::format("{}: {}", p.object.real_path, Msg(info.status())));
          }
          result_.problems.push_back(fmt::format("{} ({}): {}", p.object.needed_as,
                                                 p.object.real_path, Msg(info.status())));
          p.failed = true;
          break;
        }
        if (info->complete()) {
          p.object.info = std::move(*info);
          p.done = true;
          break;
        }
        if (p.rounds >= options_.max_rounds_per_object) {
          result_.problems.push_back(fmt::format("{} ({}): ELF still incomplete after {} reads",
                                                 p.object.needed_as, p.object.real_path, p.rounds));
          result_.truncated = true;
          p.failed = true;
          break;
        }
        for (const ByteRange& r : info->missing) {
          requests.push_back({p.object.real_path, r});
          owner.push_back(i);
        }
        ++p.rounds;
        break;
      }
    }
    if (read_cache) {
      requests.push_back({cache_file_->path, {0, cache_file_->node.size}});
      owner.push_back(SIZE_MAX);
      read_cache = false;
    }
    if (requests.empty()) return absl::OkStatus();
    std::vector<absl::StatusOr<std::string>> data = read_(requests);
    ++result_.rounds;
    if (data.size() != requests.size()) {
      return absl::InternalError(fmt::format("BatchReader returned {} results for {} requests",
                                             data.size(), requests.size()));
    }
    for (size_t k = 0; k < requests.size(); ++k) {
      const ReadRequest& rq = requests[k];
      absl::Status err;
      if (!data[k].ok()) {
        err = data[k].status();
      } else if (data[k]->size() != rq.range.length) {
        err = absl::DataLossError(fmt::format("short read at {}: {} of {} bytes", rq.range.offset,
                                              data[k]->size(), rq.range.length));
      }
      if (owner[k] == SIZE_MAX) {
        if (!err.ok()) {
          result_.problems.push_back(fmt::format("{}: {}", rq.path, Msg(err)));
          continue;
        }
        auto cache = LdSoCache::Parse(*data[k]);
        if (cache.ok()) {
          cache_ = std::move(*cache);
          result_.used_ld_so_cache = true;
        } else {
          result_.problems.push_back(fmt::format("{}: {}", rq.path, Msg(cache.status())));
        }
        continue;
      }
      Pending& p = level[owner[k]];
      if (p.failed) continue;
      if (!err.ok()) {
        if (is_root) return absl::Status(err.code(), fmt::format("{}: {}", rq.path, Msg(err)));
        result_.problems.push_back(
            fmt::format("{} ({}): {}", p.object.needed_as, rq.path, Msg(err)));
        p.failed = true;
        continue;
      }
      p.bytes->Add(rq.range.offset, *data[k]);
    }
  }
}

std::vector<LoaderObject> Walker::ChainOf(size_t index) const {
  std::vector<LoaderObject> chain;
  // Loader links point to earlier objects, so this ends; the bound is belt and braces.
  for (int i = static_cast<int>(index); i >= 0 && chain.size() <= result_.objects.size();
       i = result_.objects[i].loader) {
    const WalkObject& o = result_.objects[i];
    LoaderObject l;
    // ld.so takes the executable's origin from /proc/self/exe (symlinks resolved), a
    // library's from the name it opened.
    l.origin = DirName(o.depth == 0 ? o.real_path : o.path);
    l.rpath = o.info.rpath;
    l.runpath = o.info.runpath;
    l.nodeflib = (o.info.flags_1 & kDf1Nodeflib) != 0;
    chain.push_back(std::move(l));
  }
  return chain;
}

std::vector<Pending> Walker::NextLevel(size_t first) {
  std::vector<Pending> next;
  absl::flat_hash_map<std::string, bool> queued;  // names asked for in this level
  auto room = [&] {
    if (result_.objects.size() + next.size() < options_.max_objects) return true;
    result_.truncated = true;
    return false;
  };
  for (size_t i = first; i < result_.objects.size(); ++i) {
    const WalkObject& o = result_.objects[i];
    if (o.depth + 1 > options_.max_depth) {
      if (!o.info.needed.empty()) result_.truncated = true;
      continue;
    }
    if (o.depth == 0 && o.info.interpreter && room()) {
      auto r = ResolvePath(tree_, *o.info.interpreter);
      if (!r.ok() || r->node.kind != FileNode::Kind::kRegular) {
        result_.problems.push_back(fmt::format("PT_INTERP {}: {}", *o.info.interpreter,
                                               r.ok() ? "not a regular file" : Msg(r.status())));
      } else if (!Known(r->path)) {
        Pending p;
        p.object.depth = 1;
        p.object.loader = static_cast<int>(i);
        p.object.needed_as = "PT_INTERP";
        p.candidates.push_back({*o.info.interpreter, r->path, r->node.size, LibrarySource::kPath});
        if (NextCandidate(p)) next.push_back(std::move(p));
      }
    }
    std::vector<LoaderObject> chain;
    for (const std::string& name : o.info.needed) {
      if (by_name_.contains(name) || queued.contains(name)) continue;
      if (!room()) return next;
      if (chain.empty()) chain = ChainOf(i);
      auto candidates = resolver_->Candidates(name, chain, options_.max_candidates);
      queued[name] = true;
      if (!candidates.ok() || candidates->empty()) {
        result_.problems.push_back(
            fmt::format("{} (needed by {}): {}", name, o.real_path,
                        candidates.ok() ? "not found" : Msg(candidates.status())));
        continue;
      }
      // Already loaded under another name (same file): ld.so matches it by inode.
      if (Known(candidates->front().real_path)) continue;
      Pending p;
      p.object.depth = o.depth + 1;
      p.object.loader = static_cast<int>(i);
      p.object.needed_as = name;
      p.candidates = std::move(*candidates);
      if (NextCandidate(p)) next.push_back(std::move(p));
    }
  }
  return next;
}

absl::StatusOr<WalkResult> Walker::Run(std::string_view executable) {
  auto exe = ResolvePath(tree_, executable);
  if (!exe.ok()) return exe.status();
  if (exe->node.kind != FileNode::Kind::kRegular) {
    return absl::NotFoundError(fmt::format("{}: not a regular file", executable));
  }
  if (options_.ld_so_cache != nullptr) {
    result_.used_ld_so_cache = true;
  } else if (!options_.ld_so_cache_path.empty()) {
    auto c = ResolvePath(tree_, options_.ld_so_cache_path);
    if (c.ok() && c->node.kind == FileNode::Kind::kRegular && c->node.size > 0 &&
        c->node.size <= options_.max_ld_so_cache_bytes) {
      cache_file_ = std::move(*c);
    }
  }
  std::vector<Pending> level(1);
  level[0].object.needed_as = "";
  level[0].candidates.push_back({std::string(executable), exe->path, exe->node.size});
  NextCandidate(level[0]);
  bool root = true;
  while (!level.empty()) {
    if (absl::Status s = RunLevel(level, root); !s.ok()) return s;
    size_t first = result_.objects.size();
    for (Pending& p : level) {
      if (!p.done) continue;
      WalkObject& o = result_.objects.emplace_back(std::move(p.object));
      size_t index = result_.objects.size() - 1;
      if (!o.needed_as.empty()) by_name_.emplace(o.needed_as, index);
      if (o.info.soname) by_name_.emplace(*o.info.soname, index);
    }
    if (root) {
      const LdSoCache* cache = options_.ld_so_cache;
      if (cache == nullptr && cache_) cache = &*cache_;
      resolver_ =
          std::make_unique<LibraryResolver>(&tree_, cache, AbiForElf(result_.objects[0].info));
      root = false;
    }
    level = NextLevel(first);
  }
  return std::move(result_);
}

}  // namespace

absl::StatusOr<WalkResult> WalkDependencies(const FileTree& tree, std::string_view executable,
                                            const BatchReader& read, const WalkOptions& options) {
  Walker walker(tree, read, options);
  return walker.Run(executable);
}

}  // namespace lazypull::elf
