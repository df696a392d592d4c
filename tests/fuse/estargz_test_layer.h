// The eStargz layer of a source directory, for the FUSE tests: tar it (pax, sorted names,
// numeric owners) and write it with lazypull's eStargz writer, then open the blob and index.
#ifndef LAZYPULL_TESTS_FUSE_ESTARGZ_TEST_LAYER_H_
#define LAZYPULL_TESTS_FUSE_ESTARGZ_TEST_LAYER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {

struct EstargzTestLayer {
  std::shared_ptr<BlobReader> blob;
  std::shared_ptr<const format::LayerIndex> index;
};

// Writes `work_dir`/layer.tar and `work_dir`/layer.estargz (chunks of `chunk_size` bytes) from
// the tree at `src`. Errors carry the step that failed.
inline absl::StatusOr<EstargzTestLayer> BuildEstargzTestLayer(const std::string& src,
                                                              const std::string& work_dir,
                                                              uint64_t chunk_size) {
  const std::string tar_path = work_dir + "/layer.tar";
  auto r = RunCommand(
      {"tar", "--format=pax", "--numeric-owner", "--sort=name", "-C", src, "-cf", tar_path, "."});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("tar: " + r->output);
  auto tar = NewFileBlobReader(tar_path);
  if (!tar.ok()) return tar.status();
  auto tar_index = tar::ScanTar(**tar);
  if (!tar_index.ok()) return tar_index.status();
  const std::string blob_path = work_dir + "/layer.estargz";
  auto sink = convert::NewFileBlobSink(blob_path);
  if (!sink.ok()) return sink.status();
  convert::EstargzOptions options;
  options.chunk_size = chunk_size;
  auto written = convert::WriteEstargz(**tar, *tar_index, options, **sink);
  if (!written.ok()) return written.status();
  auto blob = NewFileBlobReader(blob_path);
  if (!blob.ok()) return blob.status();
  EstargzTestLayer layer;
  layer.blob = std::move(*blob);
  auto index = format::ReadEstargzIndex(*layer.blob, written->toc_digest);
  if (!index.ok()) return index.status();
  layer.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  return layer;
}

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_FUSE_ESTARGZ_TEST_LAYER_H_
