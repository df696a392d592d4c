// FaultBlobReader: a BlobReader wrapper for tests that counts what is read and injects one
// fault at a time: a flipped byte (optionally from a source that ReportCorruption excludes),
// failing requests, requests blocked until released, or a source that asks bulk reads to wait
// (a mirror filling itself).
#ifndef LAZYPULL_TESTS_FUSE_FAULT_BLOB_READER_H_
#define LAZYPULL_TESTS_FUSE_FAULT_BLOB_READER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "lazypull/blob_reader.h"

namespace lazypull::testing {

class FaultBlobReader : public BlobReader {
 public:
  explicit FaultBlobReader(std::unique_ptr<BlobReader> base) : base_(std::move(base)) {}

  uint64_t Size() const override { return base_->Size(); }

  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++requests_;
      ranges_.push_back({offset, length});
      ++blocked_now_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !blocked_; });
      --blocked_now_;
      if (failing_) return absl::UnavailableError("injected: registry unreachable");
    }
    auto data = base_->ReadAt(offset, length);
    if (!data.ok()) return data;
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ += length;
    if (corrupt_at_ && *corrupt_at_ >= offset && *corrupt_at_ < offset + length) {
      (*data)[*corrupt_at_ - offset] ^= 0x5a;
    }
    return data;
  }

  // Like a registry client excluding a mirror that served bad bytes: when set, a
  // ReportCorruption covering the corrupt byte removes that fault and returns true.
  bool ReportCorruption(uint64_t offset, uint64_t length) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++corruption_reports_;
    if (!corruption_excludable_ || !corrupt_at_ || *corrupt_at_ < offset ||
        *corrupt_at_ >= offset + length) {
      return false;
    }
    corrupt_at_.reset();
    return true;
  }
  void SetCorruptionExcludable(bool excludable) {
    std::lock_guard<std::mutex> lock(mu_);
    corruption_excludable_ = excludable;
  }
  int corruption_reports() const {
    std::lock_guard<std::mutex> lock(mu_);
    return corruption_reports_;
  }

  // While filling, BulkReadsReadyAt answers a time 20 ms ahead (moved on at each call, as a
  // mirror refusing each probe would be) and counts the calls.
  std::optional<std::chrono::steady_clock::time_point> BulkReadsReadyAt() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!filling_) return std::nullopt;
    ++filling_answers_;
    return std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  }
  void SetFilling(bool filling) {
    std::lock_guard<std::mutex> lock(mu_);
    filling_ = filling;
  }
  int filling_answers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return filling_answers_;
  }

  void CorruptByte(std::optional<uint64_t> offset) {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt_at_ = offset;
  }
  void SetFailing(bool failing) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_ = failing;
  }
  // While blocked, every ReadAt waits (as a stalled connection would).
  void SetBlocked(bool blocked) {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_ = blocked;
    cv_.notify_all();
  }
  // Waits until `n` requests are blocked inside ReadAt.
  void WaitBlocked(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return blocked_now_ >= n; });
  }
  uint64_t bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
  }
  uint64_t requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::vector<ByteRange> ranges() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  std::unique_ptr<BlobReader> base_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t bytes_ = 0;
  uint64_t requests_ = 0;
  std::vector<ByteRange> ranges_;
  std::optional<uint64_t> corrupt_at_;
  bool failing_ = false;
  bool corruption_excludable_ = false;
  int corruption_reports_ = 0;
  bool blocked_ = false;
  int blocked_now_ = 0;
  bool filling_ = false;
  int filling_answers_ = 0;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_FUSE_FAULT_BLOB_READER_H_
