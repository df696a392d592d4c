#include "fetcher/convert/blob_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.h"
#include "fmt/format.h"

namespace lazypull::convert {
namespace {

class FileBlobSink : public BlobSink {
 public:
  FileBlobSink(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  absl::Status Append(std::string_view data) override {
    sha_.Update(data);
    size_ += data.size();
    buffer_.append(data);
    if (buffer_.size() >= kFlushAt) return Flush();
    return absl::OkStatus();
  }
  uint64_t size() const override { return size_; }
  absl::StatusOr<Digest> Finish() override {
    if (auto st = Flush(); !st.ok()) return st;
    if (fsync(fd_.get()) != 0 && errno != EINVAL) {
      return absl::InternalError(fmt::format("fsync {}: {}", path_, strerror(errno)));
    }
    return sha_.Finish();
  }

 private:
  static constexpr size_t kFlushAt = 1 << 20;
  absl::Status Flush() {
    size_t done = 0;
    while (done < buffer_.size()) {
      ssize_t n = write(fd_.get(), buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return absl::InternalError(fmt::format("write {}: {}", path_, strerror(errno)));
      }
      done += n;
    }
    buffer_.clear();
    return absl::OkStatus();
  }

  UniqueFd fd_;
  std::string path_;
  std::string buffer_;
  Sha256 sha_;
  uint64_t size_ = 0;
};

class StringBlobSink : public BlobSink {
 public:
  explicit StringBlobSink(std::string* out) : out_(out) {}
  absl::Status Append(std::string_view data) override {
    sha_.Update(data);
    out_->append(data);
    size_ += data.size();
    return absl::OkStatus();
  }
  uint64_t size() const override { return size_; }
  absl::StatusOr<Digest> Finish() override { return sha_.Finish(); }

 private:
  std::string* out_;
  Sha256 sha_;
  uint64_t size_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BlobSink>> NewFileBlobSink(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return absl::InternalError(fmt::format("create {}: {}", path, strerror(errno)));
  }
  return std::make_unique<FileBlobSink>(std::move(fd), path);
}

std::unique_ptr<BlobSink> NewStringBlobSink(std::string* out) {
  return std::make_unique<StringBlobSink>(out);
}

}  // namespace lazypull::convert
