// TarEntry: one member of a tar stream, with its metadata resolved from every header form
// (ustar, GNU long names, PAX records) and the exact byte ranges it occupies in the stream.
//
// The converter copies header blocks verbatim (so the uncompressed layer keeps every original
// byte) and reads the payload range separately, which is why both ranges are recorded.
#ifndef LAZYPULL_FETCHER_TAR_TAR_ENTRY_H_
#define LAZYPULL_FETCHER_TAR_TAR_ENTRY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace lazypull::tar {

inline constexpr uint64_t kBlockSize = 512;

// Rounds `n` up to a whole number of 512-byte tar blocks.
inline uint64_t PadToBlock(uint64_t n) { return (n + kBlockSize - 1) / kBlockSize * kBlockSize; }

// Entry kinds. Type flags '0', '\0' (without a trailing '/') and '7' are kRegular.
enum class EntryType {
  kRegular,
  kHardlink,
  kSymlink,
  kCharDevice,
  kBlockDevice,
  kDirectory,
  kFifo,
  // A PAX global header ('g'): carries no file; copied through untouched.
  kGlobalHeader,
};

// Seconds and nanoseconds since the Unix epoch (PAX times carry fractions).
struct TarTime {
  int64_t sec = 0;
  int32_t nsec = 0;
  friend bool operator==(const TarTime&, const TarTime&) = default;
};

// Value type; thread-compatible.
struct TarEntry {
  EntryType type = EntryType::kRegular;
  std::string name;      // as written (PAX path > GNU 'L' > ustar prefix/name), not cleaned
  std::string linkname;  // hardlink/symlink target, as written
  int64_t mode = 0;      // the raw numeric mode field (permission and special bits)
  int64_t uid = 0;
  int64_t gid = 0;
  std::string uname;
  std::string gname;
  int64_t devmajor = 0;
  int64_t devminor = 0;
  TarTime mtime;
  std::optional<TarTime> atime;  // PAX atime or a non-zero GNU atime
  std::optional<TarTime> ctime;  // PAX ctime or a non-zero GNU ctime
  // Extended attributes from PAX "SCHILY.xattr.<name>" records (values are raw bytes).
  std::map<std::string, std::string> xattrs;

  // Where the entry sits in the uncompressed stream: header blocks (including any preceding
  // PAX 'x' / GNU 'L'/'K' extension headers) occupy [header_offset, payload_offset); the
  // payload occupies [payload_offset, payload_offset + payload_size), followed by zero padding
  // up to the next 512-byte boundary.
  uint64_t header_offset = 0;
  uint64_t payload_offset = 0;
  // Bytes of payload in the stream. 0 for header-only types (links, dirs, devices, fifos)
  // whatever their size field says, as GNU tar and Go's archive/tar read them.
  uint64_t payload_size = 0;

  uint64_t header_size() const { return payload_offset - header_offset; }
  // Offset just past the payload padding: where the next entry's headers start.
  uint64_t end_offset() const { return payload_offset + PadToBlock(payload_size); }
};

// "stargz.index.json" for "./stargz.index.json", "/a/../b/" -> "b": the name as a clean path
// relative to the layer root ("" for the root itself). Used to compare entry names.
std::string CleanEntryName(const std::string& name);

}  // namespace lazypull::tar

#endif  // LAZYPULL_FETCHER_TAR_TAR_ENTRY_H_
