#include "lazypull/blob_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "fmt/format.h"

namespace lazypull {

absl::Status BlobReader::StreamRanges(std::span<const ByteRange> ranges, const Sink& sink) {
  for (const ByteRange& r : ranges) {
    absl::StatusOr<std::string> data = ReadAt(r.offset, r.length);
    if (!data.ok()) return data.status();
    if (absl::Status st = sink(r.offset, *data); !st.ok()) return st;
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckRange(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(
        fmt::format("range [{}, +{}) is past the blob end {}", offset, length, size));
  }
  return absl::OkStatus();
}

class StringBlobReader : public BlobReader {
 public:
  explicit StringBlobReader(std::string data) : data_(std::move(data)) {}
  uint64_t Size() const override { return data_.size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    if (auto st = CheckRange(offset, length, data_.size()); !st.ok()) return st;
    return data_.substr(offset, length);
  }

 private:
  const std::string data_;
};

class FileBlobReader : public BlobReader {
 public:
  FileBlobReader(UniqueFd fd, uint64_t size, std::string path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}
  uint64_t Size() const override { return size_; }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    if (auto st = CheckRange(offset, length, size_); !st.ok()) return st;
    std::string out(length, '\0');
    uint64_t done = 0;
    while (done < length) {
      ssize_t n = pread(fd_.get(), out.data() + done, length - done, offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::DataLossError(fmt::format("read {} at {}: {}", path_, offset + done,
                                               n < 0 ? strerror(errno) : "unexpected EOF"));
      }
      done += n;
    }
    return out;
  }

 private:
  UniqueFd fd_;
  uint64_t size_;
  std::string path_;
};

}  // namespace

std::unique_ptr<BlobReader> NewStringBlobReader(std::string data) {
  return std::make_unique<StringBlobReader>(std::move(data));
}

absl::StatusOr<std::unique_ptr<BlobReader>> NewFileBlobReader(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::NotFoundError(fmt::format("open {}: {}", path, strerror(errno)));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) {
    return absl::InternalError(fmt::format("stat {}: {}", path, strerror(errno)));
  }
  return std::make_unique<FileBlobReader>(std::move(fd), st.st_size, path);
}

}  // namespace lazypull
