#include "fetcher/registry/reference.h"

#include <regex>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::registry {
namespace {

absl::Status Bad(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      fmt::format("invalid image reference \"{}\": {}", text.substr(0, 300), why));
}

bool LooksLikeHost(std::string_view first) {
  return first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
         first == "localhost";
}

}  // namespace

std::string Reference::ManifestReference() const {
  if (!digest.empty()) return digest.ToString();
  return tag.empty() ? "latest" : tag;
}

std::string Reference::Name() const { return host + "/" + repository; }

std::string Reference::ToString() const {
  std::string s = Name();
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest.ToString();
  return s;
}

bool IsLocalhost(std::string_view host) {
  std::string_view h = host;
  if (h.starts_with("[")) {
    auto end = h.find(']');
    h = end == std::string_view::npos ? h : h.substr(1, end - 1);
  } else if (auto c = h.rfind(':'); c != std::string_view::npos && h != "::1") {
    h = h.substr(0, c);
  }
  return h == "localhost" || h == "127.0.0.1" || h == "::1";
}

absl::StatusOr<Reference> ParseReference(std::string_view text) {
  if (text.empty()) return Bad(text, "empty");
  if (text.size() > 4096) return Bad(text, "too long");
  Reference ref;
  std::string_view rest = text;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    auto d = Digest::Parse(rest.substr(at + 1));
    if (!d.ok()) return Bad(text, std::string(d.status().message()));
    ref.digest = *d;
    rest = rest.substr(0, at);
  }
  // A tag is after the last ':' that follows the last '/'.
  auto slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    static const std::regex kTag("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
    if (!std::regex_match(ref.tag, kTag)) return Bad(text, "invalid tag \"" + ref.tag + "\"");
  }
  std::string_view name = rest;
  auto first_slash = name.find('/');
  if (first_slash != std::string_view::npos && LooksLikeHost(name.substr(0, first_slash))) {
    ref.host = std::string(name.substr(0, first_slash));
    ref.repository = std::string(name.substr(first_slash + 1));
  } else {
    ref.host = "docker.io";
    ref.repository = std::string(name);
  }
  if (ref.host == "index.docker.io" || ref.host == "registry-1.docker.io") ref.host = "docker.io";
  static const std::regex kHost(
      R"((\[[0-9a-fA-F:]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)(:[0-9]{1,5})?)");
  if (!std::regex_match(ref.host, kHost)) return Bad(text, "invalid host \"" + ref.host + "\"");
  if (ref.host == "docker.io" && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  static const std::regex kRepo(
      R"([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*)");
  if (ref.repository.empty()) return Bad(text, "empty repository");
  if (!std::regex_match(ref.repository, kRepo)) {
    return Bad(text, "invalid repository \"" + ref.repository +
                         "\" (lower-case letters, digits and separators only)");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace lazypull::registry
