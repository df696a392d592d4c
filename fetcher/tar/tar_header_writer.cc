#include "fetcher/tar/tar_header_writer.h"

#include <cstring>

#include "absl/status/status.h"
#include "fetcher/tar/tar_entry.h"
#include "fmt/format.h"

namespace lazypull::tar {
namespace {

// Writes `value` as zero-padded octal with a trailing NUL into a field of `width` bytes.
void PutOctal(std::string& block, size_t offset, size_t width, uint64_t value) {
  std::string digits = fmt::format("{:0{}o}", value, width - 1);
  memcpy(block.data() + offset, digits.data(), width - 1);
  block[offset + width - 1] = '\0';
}

}  // namespace

absl::StatusOr<std::string> RegularFileHeader(const std::string& name, uint64_t size) {
  if (name.size() > 100) {
    return absl::InvalidArgumentError(fmt::format("tar name too long for ustar: {}", name));
  }
  if (size >= (1ull << 33)) {
    return absl::InvalidArgumentError(fmt::format("size {} too large for ustar", size));
  }
  std::string block(512, '\0');
  memcpy(block.data(), name.data(), name.size());
  PutOctal(block, 100, 8, 0);  // mode
  PutOctal(block, 108, 8, 0);  // uid
  PutOctal(block, 116, 8, 0);  // gid
  PutOctal(block, 124, 12, size);
  PutOctal(block, 136, 12, 0);  // mtime
  block[156] = '0';
  memcpy(block.data() + 257,
         "ustar\0"
         "00",
         8);
  PutOctal(block, 329, 8, 0);  // devmajor
  PutOctal(block, 337, 8, 0);  // devminor
  memset(block.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : block) sum += c;
  std::string chk = fmt::format("{:06o}", sum);
  memcpy(block.data() + 148, chk.data(), 6);
  block[154] = '\0';
  block[155] = ' ';
  return block;
}

std::string EndOfArchive() { return std::string(2 * kBlockSize, '\0'); }

}  // namespace lazypull::tar
