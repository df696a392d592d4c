// Digest: an OCI content digest ("sha256:<64 lowercase hex>"), and incremental SHA-256.
//
// Only sha256 is accepted (as containerd's default); anything else is InvalidArgument.
// Value type; thread-compatible.
#ifndef LAZYPULL_DIGEST_H_
#define LAZYPULL_DIGEST_H_

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lazypull {

class Digest {
 public:
  Digest() = default;
  // Parses "sha256:<hex>". Errors name the offending text.
  static absl::StatusOr<Digest> Parse(std::string_view text);
  // The sha256 digest of `data`.
  static Digest Of(std::string_view data);
  // From 32 raw bytes.
  static Digest FromRaw(std::string_view raw32);

  bool empty() const { return hex_.empty(); }
  const std::string& hex() const { return hex_; }            // 64 lowercase hex chars
  std::string Raw() const;                                   // 32 raw bytes ("" if empty)
  std::string ToString() const { return "sha256:" + hex_; }  // "sha256:..."
  // Returns OK if sha256(data) equals this digest, else DataLoss naming both digests.
  absl::Status Verify(std::string_view data) const;

  friend bool operator==(const Digest& a, const Digest& b) { return a.hex_ == b.hex_; }
  friend bool operator!=(const Digest& a, const Digest& b) { return a.hex_ != b.hex_; }
  friend bool operator<(const Digest& a, const Digest& b) { return a.hex_ < b.hex_; }

 private:
  std::string hex_;
};

// Incremental SHA-256 for streams. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  // Returns the digest; the object must not be used afterwards.
  Digest Finish();

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace lazypull

#endif  // LAZYPULL_DIGEST_H_
