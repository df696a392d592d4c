#include "fetcher/format/soci/ztoc.h"

#include <string_view>

namespace lazypull::soci {

std::vector<std::pair<std::string, std::string>> ZtocFile::Xattrs() const {
  constexpr std::string_view kPrefix = "SCHILY.xattr.";
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, value] : pax_records) {
    if (key.size() > kPrefix.size() && std::string_view(key).substr(0, kPrefix.size()) == kPrefix) {
      out.emplace_back(key.substr(kPrefix.size()), value);
    }
  }
  return out;
}

ByteRange Ztoc::SpanCompressedRange(size_t i) const {
  const uint64_t start = checkpoints.at(i).resume_offset();
  const uint64_t end = i + 1 < checkpoints.size() ? checkpoints.at(i + 1).compressed_offset
                                                  : compressed_archive_size;
  return {start, end > start ? end - start : 0};
}

ByteRange Ztoc::SpanUncompressedRange(size_t i) const {
  const uint64_t start = checkpoints.at(i).uncompressed_offset;
  const uint64_t end = i + 1 < checkpoints.size() ? checkpoints.at(i + 1).uncompressed_offset
                                                  : uncompressed_archive_size;
  return {start, end > start ? end - start : 0};
}

}  // namespace lazypull::soci
