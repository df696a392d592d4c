// `lazypull index create`: SOCI indexes for unmodified gzip images (issue 19), as
// soci-snapshotter's `soci convert` (v2, the default) and `soci create` + `soci push` (v1).
//
// v2 writes a SOCI-enabled image to DST (a registry reference or `oci:DIR[:TAG]`): the
// original layers and config byte for byte, the image manifest annotated with the SOCI index
// digest, the zTOCs, the SOCI index manifest, and an image index bundling both. v1 leaves the
// image alone and pushes the zTOCs and the SOCI index into SRC's repository as a referrer of
// its manifest (the referrers tag schema where the registry has no referrers API).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "fetcher/cache/cache_config.h"
#include "fetcher/convert/image_store.h"
#include "fetcher/convert/soci_image_indexer.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"
#include "tools/commands.h"
#include "tools/image_ref.h"
#include "tools/optimize/scratch_dir.h"

namespace lazypull::tools {
namespace {

struct IndexCreateFlags {
  std::string span_size = "4MiB";
  std::string large_file_spans;  // "" = half the span size
  std::string min_layer_size = "10MiB";
  bool fine_index = true;
  std::string fine_span_size = "128KiB";  // soci::kDefaultFineSpanSize
  bool v1 = false;
  bool plain_http = false;
  std::string platform;
  std::string work_dir;
  std::string src, dst;
};

std::string Human(uint64_t n) {
  if (n >= (1ull << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(n) / (1 << 20));
  if (n >= (1ull << 10)) return fmt::format("{:.1f} KiB", static_cast<double>(n) / (1 << 10));
  return fmt::format("{} B", n);
}

// Lists the v1 index as a referrer of the image manifest in SRC's repository.
absl::Status AddV1Referrer(const IndexCreateFlags& f, const convert::SociIndexResult& result) {
  auto ref = registry::ParseReference(f.src);
  if (!ref.ok()) return ref.status();
  registry::RegistryConfig config;
  if (f.plain_http) config.plain_http.insert(ref->host);
  registry::RegistryClient client(std::move(config), registry::NewCurlTransport());
  oci::Descriptor referrer = result.soci_index;
  // What oras (and so `soci push`) lists: the artifact type is the index's config media type.
  referrer.artifact_type = std::string(soci::kSociIndexV1);
  referrer.annotations[std::string(soci::kAnnotationBuildTool)] = "lazypull index create";
  auto tag_schema = client.AddReferrer(*ref, result.image_manifest.digest, referrer);
  if (!tag_schema.ok()) return tag_schema.status();
  fprintf(stderr, "referrer of %s listed %s\n", result.image_manifest.digest.ToString().c_str(),
          *tag_schema ? "in the referrers tag schema (registry has no referrers API)"
                      : "by the registry's referrers API");
  return absl::OkStatus();
}

absl::Status RunIndexCreate(const IndexCreateFlags& f) {
  convert::SociIndexOptions options;
  auto span = ParseByteSize(f.span_size);
  if (!span.ok()) return absl::InvalidArgumentError("--span-size: " + span.status().ToString());
  auto min = ParseByteSize(f.min_layer_size);
  if (!min.ok() && f.min_layer_size != "0") {
    return absl::InvalidArgumentError("--min-layer-size: " + min.status().ToString());
  }
  options.span_size = *span;
  if (f.large_file_spans.empty()) {
    options.large_file_spans = std::max<uint64_t>(1, *span / 2);
  } else if (f.large_file_spans != "0") {
    auto large = ParseByteSize(f.large_file_spans);
    if (!large.ok()) {
      return absl::InvalidArgumentError("--large-file-spans: " + large.status().ToString());
    }
    options.large_file_spans = *large;
  }
  options.min_layer_size = min.ok() ? *min : 0;
  options.fine_index = f.fine_index;
  auto fine_span = ParseByteSize(f.fine_span_size);
  if (!fine_span.ok() || *fine_span == 0) {
    return absl::InvalidArgumentError("--fine-span-size: must be a positive size");
  }
  options.fine_span_size = *fine_span;
  options.version = f.v1 ? soci::SociIndexVersion::kV1 : soci::SociIndexVersion::kV2;
  if (!f.platform.empty()) {
    auto p = oci::ParsePlatform(f.platform);
    if (!p.ok()) return p.status();
    options.platform = *p;
  }
  if (f.v1) {
    if (!f.dst.empty()) {
      return absl::InvalidArgumentError(
          "--v1 attaches the index to SRC in its own repository: give no DST");
    }
    if (absl::StartsWith(f.src, "oci:")) {
      return absl::InvalidArgumentError("--v1 needs a registry SRC (referrers live there)");
    }
  } else if (f.dst.empty()) {
    return absl::InvalidArgumentError("DST is required (where the SOCI-enabled image goes)");
  }
  auto scratch = optimize::ScratchDir::Create(f.work_dir, "lazypull-index-");
  if (!scratch.ok()) return scratch.status();
  options.work_dir = scratch->path();

  auto src = OpenImageRef(f.src, f.plain_http, /*for_push=*/false);
  if (!src.ok()) return src.status();
  auto dst = OpenImageRef(f.v1 ? f.src : f.dst, f.plain_http, /*for_push=*/true);
  if (!dst.ok()) return dst.status();
  auto result =
      convert::CreateSociIndex(**src, **dst, options, [](const convert::SociIndexedLayer& l) {
        if (l.ztoc) {
          fprintf(stderr, "layer %s (%s): zTOC %s (%s, %zu spans, %zu files)\n",
                  l.layer.digest.ToString().c_str(), Human(l.layer.size).c_str(),
                  l.ztoc->digest.ToString().c_str(), Human(l.ztoc->size).c_str(), l.spans, l.files);
          if (l.fine_ztoc && l.fine_windows) {
            fprintf(stderr, "  fine index %s (%s) + windows %s (%s), %zu spans\n",
                    l.fine_ztoc->digest.ToString().c_str(), Human(l.fine_ztoc->size).c_str(),
                    l.fine_windows->digest.ToString().c_str(), Human(l.fine_windows->size).c_str(),
                    l.fine_spans);
          }
        } else {
          fprintf(stderr, "layer %s (%s): no zTOC, %s\n", l.layer.digest.ToString().c_str(),
                  Human(l.layer.size).c_str(), l.skipped.c_str());
        }
      });
  if (!result.ok()) return result.status();
  fprintf(stderr, "soci index %s (%s) for image manifest %s\n",
          result->soci_index.digest.ToString().c_str(), f.v1 ? "v1" : "v2",
          result->image_manifest.digest.ToString().c_str());
  if (f.v1) {
    if (auto st = AddV1Referrer(f, *result); !st.ok()) return st;
    printf("%s\n", result->soci_index.digest.ToString().c_str());
  } else {
    printf("%s\n", result->root->digest.ToString().c_str());
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterIndexCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<IndexCreateFlags>();
  CLI::App* index = app.add_subcommand("index", "SOCI indexes for unmodified gzip images");
  index->require_subcommand(1);
  CLI::App* cmd = index->add_subcommand(
      "create",
      "Build zTOCs for an image's gzip layers and write a SOCI-enabled image (v2) to DST, or "
      "attach a v1 index to SRC as a referrer (--v1)");
  cmd->add_option("--span-size", flags->span_size,
                  "Uncompressed bytes between zTOC checkpoints (e.g. 4MiB)")
      ->capture_default_str();
  cmd->add_option("--large-file-spans", flags->large_file_spans,
                  "Files at least this large get zTOC checkpoints where they start and end, so "
                  "small files around them are fetched without their bytes (default: half the "
                  "span size; 0: soci's own checkpoints exactly)");
  cmd->add_option("--min-layer-size", flags->min_layer_size,
                  "Layers smaller than this (compressed) get no zTOC and are pulled normally")
      ->capture_default_str();
  cmd->add_flag("--fine-index,!--no-fine-index", flags->fine_index,
                "Also write lazypull's fine index per layer (small spans, windows in their own "
                "blob; soci's readers ignore it): --fine-index=false to leave it out")
      ->capture_default_str();
  cmd->add_option("--fine-span-size", flags->fine_span_size,
                  "Uncompressed bytes between the fine index's checkpoints")
      ->capture_default_str();
  cmd->add_flag("--v1", flags->v1,
                "Push a SOCI v1 index as a referrer of SRC instead (the daemon reads v1 only "
                "with [soci] v1 = true)");
  cmd->add_flag("--plain-http", flags->plain_http, "Use HTTP (not HTTPS) for registries");
  cmd->add_option("--platform", flags->platform,
                  "Platform to index in a multi-platform image (default: this host's)");
  cmd->add_option("--work-dir", flags->work_dir, "Scratch directory for downloaded layers");
  cmd->add_option("SRC", flags->src, "oci:DIR[:TAG] or HOST/REPO[:TAG|@DIGEST]")->required();
  cmd->add_option("DST", flags->dst, "oci:DIR[:TAG] or HOST/REPO[:TAG] (v2)");
  cmd->callback([flags, exit_code] {
    absl::Status st = RunIndexCreate(*flags);
    if (!st.ok()) {
      fprintf(stderr, "lazypull index create: %s\n", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace lazypull::tools
