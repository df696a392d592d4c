// `lazypull convert`: converts an image into eStargz or zstd:chunked.
//
// SRC and DST are `oci:DIR[:TAG]` (an OCI image layout) or registry references
// (HOST[:PORT]/REPO[:TAG|@DIGEST]).
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "fetcher/convert/image_converter.h"
#include "fetcher/convert/image_store.h"
#include "fmt/format.h"
#include "tools/commands.h"
#include "tools/image_ref.h"

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
  std::string src, dst;
};

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
  if (!options.estargz.prioritized_files.empty() && *format != convert::LayerFormat::kEstargz) {
    return absl::InvalidArgumentError("--prioritize applies to --format estargz only");
  }
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
  auto result = convert::ConvertImage(**src, **dst, options);
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
                  "Files to put first (eStargz prefetch landmark); repeatable")
      ->expected(1, -1);
  cmd->add_option("--prioritize-list", flags->prioritize_list,
                  "File with one prioritized path per line");
  cmd->add_option("--chunk-size", flags->chunk_size,
                  "Chunk size in bytes (eStargz: default 4 MiB; zstd:chunked: maximum chunk)");
  cmd->add_option("--level", flags->level, "Compression level (gzip 1-12, zstd 1-22)");
  cmd->add_option("--work-dir", flags->work_dir, "Scratch directory for decompressed layers");
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
