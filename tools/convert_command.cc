// `lazypull convert`: converts an image into eStargz or zstd:chunked.
//
// SRC and DST are `oci:DIR[:TAG]` (an OCI image layout) or registry references
// (HOST[:PORT]/REPO[:TAG|@DIGEST]). With --optimize the image first runs once in a throw-away
// container (tools/optimize) and the files it opens come first in their layers.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "fetcher/convert/image_converter.h"
#include "fetcher/convert/image_store.h"
#include "fmt/format.h"
#include "tools/commands.h"
#include "tools/image_ref.h"
#include "tools/optimize/blob_cache_store.h"
#include "tools/optimize/container_spec.h"
#include "tools/optimize/prefetch_recorder.h"
#include "tools/optimize/scratch_dir.h"

namespace lazypull::tools {
namespace {

struct ConvertFlags {
  std::string format;
  bool plain_http = false;
  std::vector<std::string> prioritize;
  std::string prioritize_list;
  uint64_t chunk_size = 0;
  int level = 0;
  std::string work_dir;
  bool optimize = false;
  std::string optimize_cmd;
  std::string optimize_timeout = "10s";
  bool verbose = false;
  std::string src, dst;
};

// "10s", "1m30s", "500ms" (Go-style durations) or a plain number of seconds.
absl::StatusOr<std::chrono::milliseconds> ParseTimeout(const std::string& text) {
  int64_t seconds = 0;
  absl::Duration d;
  if (absl::SimpleAtoi(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        fmt::format("--optimize-timeout \"{}\": want a duration such as 10s or 1m30s", text));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        fmt::format("--optimize-timeout \"{}\" must be positive", text));
  }
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Runs the image and prints what it opened, per layer (every file with `verbose`).
absl::StatusOr<optimize::RecordedPrefetch> Record(convert::ImageStore& src, const ConvertFlags& f) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError(
        "--optimize needs root (it mounts overlayfs, runs runc and uses fanotify)");
  }
  optimize::OptimizeOptions options;
  options.work_dir = f.work_dir;
  if (!f.optimize_cmd.empty()) {
    auto cmd = optimize::ParseCommandLine(f.optimize_cmd);
    if (!cmd.ok()) return cmd.status();
    options.command = *cmd;
  }
  auto timeout = ParseTimeout(f.optimize_timeout);
  if (!timeout.ok()) return timeout.status();
  options.timeout = *timeout;
  auto recorded = optimize::RecordPrefetch(src, options);
  if (!recorded.ok()) return recorded.status();
  fprintf(stderr, "optimize: ran [%s] (%s): %zu files opened\n",
          absl::StrJoin(recorded->command, " ").c_str(), recorded->exit.c_str(),
          recorded->accessed.size());
  for (const std::string& digest : recorded->layer_digests) {
    auto it = recorded->by_layer.find(digest);
    size_t n = it == recorded->by_layer.end() ? 0 : it->second.size();
    fprintf(stderr, "optimize: layer %s: %zu files prioritized\n", digest.c_str(), n);
    if (f.verbose && n > 0) {
      for (const std::string& path : it->second) fprintf(stderr, "  /%s\n", path.c_str());
    }
  }
  if (!recorded->unassigned.empty()) {
    fprintf(stderr, "optimize: %zu opened files are in no layer (made by the program)\n",
            recorded->unassigned.size());
    if (f.verbose) {
      for (const std::string& path : recorded->unassigned) {
        fprintf(stderr, "  /%s\n", path.c_str());
      }
    }
  }
  return recorded;
}

absl::StatusOr<std::vector<std::string>> ReadListFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("cannot open prioritize list {}", path));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view v = absl::StripAsciiWhitespace(line);
    if (v.empty() || v[0] == '#') continue;
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

absl::Status RunConvert(const ConvertFlags& f) {
  auto format = convert::ParseLayerFormat(f.format);
  if (!format.ok()) return format.status();
  convert::ConvertOptions options;
  options.format = *format;
  options.work_dir = f.work_dir;
  options.estargz.prioritized_files = f.prioritize;
  if (!f.prioritize_list.empty()) {
    auto list = ReadListFile(f.prioritize_list);
    if (!list.ok()) return list.status();
    options.estargz.prioritized_files.insert(options.estargz.prioritized_files.end(), list->begin(),
                                             list->end());
  }
  options.zstd_chunked.prioritized_files = options.estargz.prioritized_files;
  if (f.chunk_size > 0) {
    options.estargz.chunk_size = f.chunk_size;
    options.zstd_chunked.max_chunk_size = f.chunk_size;
  }
  if (f.level > 0) {
    options.estargz.gzip_level = f.level;
    options.zstd_chunked.zstd_level = f.level;
  }
  auto src = OpenImageRef(f.src, f.plain_http, /*for_push=*/false);
  if (!src.ok()) return src.status();
  auto dst = OpenImageRef(f.dst, f.plain_http, /*for_push=*/true);
  if (!dst.ok()) return dst.status();
  convert::ImageStore* source = src->get();
  std::optional<optimize::ScratchDir> blob_cache;
  std::unique_ptr<convert::ImageStore> caching;
  if (f.optimize) {
    // The layers are read twice (run, then convert): download them once.
    auto dir = optimize::ScratchDir::Create(f.work_dir, "lazypull-blobs-");
    if (!dir.ok()) return dir.status();
    blob_cache.emplace(std::move(*dir));
    caching = optimize::NewBlobCachingImageStore(**src, blob_cache->path());
    source = caching.get();
    auto recorded = Record(*source, f);
    if (!recorded.ok()) return recorded.status();
    options.prioritized_by_layer = std::move(recorded->by_layer);
  }
  auto result = convert::ConvertImage(*source, **dst, options);
  if (!result.ok()) return result.status();
  for (const auto& l : result->layers) {
    fprintf(stderr, "layer %s -> %s (%lld bytes)\n", l.source.digest.ToString().c_str(),
            l.converted.digest.ToString().c_str(), static_cast<long long>(l.converted.size));
  }
  printf("%s\n", result->root.digest.ToString().c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterConvertCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert an image's layers to eStargz or zstd:chunked for lazy pulling");
  cmd->add_option("--format", flags->format, "estargz | zstd:chunked")->required();
  cmd->add_flag("--plain-http", flags->plain_http, "Use HTTP (not HTTPS) for registries");
  cmd->add_option("--prioritize", flags->prioritize,
                  "Files to put first in every layer holding them (prefetched at mount); "
                  "repeatable")
      ->expected(1, -1);
  cmd->add_option("--prioritize-list", flags->prioritize_list,
                  "File with one prioritized path per line");
  cmd->add_option("--chunk-size", flags->chunk_size,
                  "Chunk size in bytes (eStargz: default 4 MiB; zstd:chunked: maximum chunk)");
  cmd->add_option("--level", flags->level, "Compression level (gzip 1-12, zstd 1-22)");
  cmd->add_option("--work-dir", flags->work_dir, "Scratch directory for decompressed layers");
  CLI::Option* optimize =
      cmd->add_flag("--optimize", flags->optimize,
                    "Run the image once (runc, no network) and put the files it opens first in "
                    "their layers, to be prefetched at mount (needs root)");
  cmd->add_option("--optimize-cmd", flags->optimize_cmd,
                  "Command to run instead of the image's entrypoint + cmd: a JSON array or "
                  "shell-quoted words, e.g. '/bin/sh -c \"cat /etc/os-release\"'")
      ->needs(optimize);
  cmd->add_option("--optimize-timeout", flags->optimize_timeout,
                  "Kill the command after this long (e.g. 10s, 1m); what it opened is kept")
      ->capture_default_str()
      ->needs(optimize);
  cmd->add_flag("-v,--verbose", flags->verbose, "List the recorded files");
  cmd->add_option("SRC", flags->src, "oci:DIR[:TAG] or HOST/REPO[:TAG|@DIGEST]")->required();
  cmd->add_option("DST", flags->dst, "oci:DIR[:TAG] or HOST/REPO[:TAG]")->required();
  cmd->callback([flags, exit_code] {
    absl::Status st = RunConvert(*flags);
    if (!st.ok()) {
      fprintf(stderr, "lazypull convert: %s\n", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace lazypull::tools
