#include "lazypull/digest.h"

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

std::string ToHex(const unsigned char* data, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[data[i] >> 4];
    out[2 * i + 1] = kHex[data[i] & 0xf];
  }
  return out;
}

}  // namespace

absl::StatusOr<Digest> Digest::Parse(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  if (text.substr(0, kPrefix.size()) != kPrefix || text.size() != kPrefix.size() + 64) {
    return absl::InvalidArgumentError(
        fmt::format("invalid digest \"{}\": want sha256:<64 hex>", text.substr(0, 200)));
  }
  Digest d;
  d.hex_ = std::string(text.substr(kPrefix.size()));
  for (char c : d.hex_) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return absl::InvalidArgumentError(
          fmt::format("invalid digest \"{}\": not lowercase hex", text));
    }
  }
  return d;
}

Digest Digest::Of(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

Digest Digest::FromRaw(std::string_view raw32) {
  Digest d;
  d.hex_ = ToHex(reinterpret_cast<const unsigned char*>(raw32.data()), raw32.size());
  return d;
}

std::string Digest::Raw() const {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string raw(hex_.size() / 2, '\0');
  for (size_t i = 0; i < raw.size(); ++i) {
    raw[i] = static_cast<char>(nibble(hex_[2 * i]) << 4 | nibble(hex_[2 * i + 1]));
  }
  return raw;
}

absl::Status Digest::Verify(std::string_view data) const {
  Digest actual = Of(data);
  if (actual == *this) return absl::OkStatus();
  return absl::DataLossError(
      fmt::format("digest mismatch: expected {}, got {}", ToString(), actual.ToString()));
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }

Digest Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, out, &len);
  return Digest::FromRaw(std::string_view(reinterpret_cast<char*>(out), len));
}

}  // namespace lazypull
