// The lazypull "fine index" of a gzip layer: a second zTOC, next to soci's own, with checkpoints
// every ~128 KiB of uncompressed data instead of every 4 MiB, so a read fetches and verifies
// ~50-65 KiB spans rather than multi-megabyte ones. soci's format holds a raw 32 KiB window per
// checkpoint inside the zTOC, which at this density would make the zTOC bigger than what it
// saves; so the windows move out, and each is fetched only with its span:
//
//  - fine blob (kFineZtocMediaType): zstd of a framed record, fetched whole at mount and
//    verified by its digest:
//        "LPFINEZ1"            8 bytes magic
//        u32 version (1)       little-endian, like every integer here
//        u32 window count      = the zTOC's checkpoint count
//        u64 zTOC length
//        per checkpoint: u64 offset, u32 length (in the windows blob), 32 bytes sha256 of the
//                        UNCOMPRESSED window
//        the zTOC: soci's FlatBuffers schema (flatc --json decodes it), its span_digests
//                  the fine spans' sha256, its checkpoints blob lazypull's WINDOWLESS zinfo
//                  (offsets and bits only: ZinfoCheckpoints::ParseWindowless). Zeroed 32 KiB
//                  windows would vanish under zstd too, but not in memory: decompressing and
//                  copying them cost ~0.4 s per layer at mount on the benchmark machine
//                  (23 MiB of zeros for python's 742 checkpoints), on the cold start's path.
//  - windows blob (kFineWindowsMediaType): each checkpoint's 32 KiB window, each compressed on
//    its own (one zstd frame), concatenated in checkpoint order; read by range on demand and
//    checked against the table's sha256 after decompression, before any inflate uses it.
//
// Readers find both through annotations on the zTOC descriptor of the SOCI index manifest
// (trusted as far as the index is: it is verified by its digest); both blobs are also listed
// as layers of that manifest WITHOUT com.amazon.soci.image-layer-digest, so registry GC keeps
// them and soci's readers (which map layers to zTOCs by mediaType application/octet-stream)
// ignore them.
//
// Thread-safe (pure functions).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_FINE_INDEX_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_FINE_INDEX_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

inline constexpr std::string_view kFineZtocMediaType =
    "application/vnd.lazypull.soci.fine-ztoc.v1+zstd";
inline constexpr std::string_view kFineWindowsMediaType =
    "application/vnd.lazypull.soci.fine-windows.v1";
// On the zTOC descriptor of a SOCI index manifest (and copied to the layer descriptor the
// daemon persists).
inline constexpr std::string_view kAnnotationFineZtocDigest = "dev.lazypull.soci.fine-ztoc.digest";
inline constexpr std::string_view kAnnotationFineZtocSize = "dev.lazypull.soci.fine-ztoc.size";
inline constexpr std::string_view kAnnotationFineWindowsDigest =
    "dev.lazypull.soci.fine-windows.digest";
inline constexpr std::string_view kAnnotationFineWindowsSize =
    "dev.lazypull.soci.fine-windows.size";

// Uncompressed bytes between fine checkpoints. 128 KiB of tar is ~50-65 KiB of gzip for the
// usual 2-2.5x of binaries and text: a read wastes at most about one such span at each end,
// and a small file costs one span plus one window (~14 KiB compressed) instead of a 4 MiB
// span. A run of spans needs one window fetched (the others are the previous span's output:
// FineWindows::Offer), so smaller spans cost little on large reads; the fine blob grows by
// ~130 bytes per checkpoint (offsets, table entry, digest): 0.54 MiB for python's two layers.
// Below this, spans approach the deflate block size (often 16-64 KiB of output), under which
// checkpoints cannot go anyway. Measured on python's cold start (bench/coldstart, shaped
// link): 256 KiB spans moved 9.2 MiB before the first output (before windows were derived
// with Offer), 128 KiB 7.7 MiB (with it); eStargz 5.7 MiB.
inline constexpr uint64_t kDefaultFineSpanSize = 128ull << 10;

inline constexpr char kFineMagic[] = "LPFINEZ1";  // 8 bytes, no terminator written
inline constexpr uint32_t kFineVersion = 1;
inline constexpr size_t kFineHeaderSize = 8 + 4 + 4 + 8;
inline constexpr size_t kFineWindowRecordSize = 8 + 4 + 32;
// A zstd frame of 32 KiB is at most ~32.8 KiB; anything larger is not a window.
inline constexpr uint32_t kMaxFineWindowBytes = 64u << 10;

struct FineWindow {
  uint64_t offset = 0;               // in the windows blob
  uint32_t length = 0;               // compressed bytes
  std::array<uint8_t, 32> sha256{};  // of the uncompressed 32 KiB window
};

// The decoded fine blob.
struct FineFrame {
  std::string ztoc;  // soci FlatBuffers bytes (untrusted until ParseZtoc)
  std::vector<FineWindow> windows;
};

struct FineLimits {
  uint64_t max_ztoc_bytes = 512ull << 20;  // decompressed fine blob cap
  uint64_t max_windows = 1u << 16;
};

// The framed record (before zstd). InvalidArgument if a window length exceeds the cap.
absl::StatusOr<std::string> SerializeFineFrame(const FineFrame& frame);

// Parses a framed record (after zstd) of untrusted bytes: magic, version, a window count
// within `limits`, every window length in (0, kMaxFineWindowBytes], window ranges not
// overlapping and in order, the zTOC length exactly the rest. Does not parse the zTOC, nor
// check the windows against the windows blob's size (OpenFineSociLayerIndex does). Errors:
// InvalidArgument naming the problem ("fine index: ..."), ResourceExhausted over a limit.
absl::StatusOr<FineFrame> ParseFineFrame(std::string_view bytes, const FineLimits& limits = {});

// zstd-decompresses (capped at limits.max_ztoc_bytes plus the table) and parses a fine blob.
// DataLoss for bad zstd data, else ParseFineFrame's errors.
absl::StatusOr<FineFrame> DecodeFineBlob(std::string_view blob, const FineLimits& limits = {});

// The two blobs of a layer's fine index.
struct FineIndexBlobs {
  std::string fine;  // zstd'd framed record
  // The windows blob (concatenated zstd frames), written to the caller's file.
  Digest windows_digest;
  uint64_t windows_size = 0;
  size_t spans = 0;
};

// Builds the fine index of a gzip layer (a second pass over `layer`): BuildZtoc with
// `options` (span_size = the fine span size), each window compressed as it is found and
// appended to a new file at `windows_path` (memory does not grow with the layer: a 1 GiB layer
// of incompressible data has 256 MiB of windows). BuildZtoc's errors; Internal when the file
// cannot be written.
absl::StatusOr<FineIndexBlobs> BuildFineIndex(BlobReader& layer, const ZtocBuildOptions& options,
                                              const std::string& windows_path);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_FINE_INDEX_H_
