#include <string>
#include <string_view>

#include "fetcher/registry/http_transport.h"

namespace lazypull::registry {

std::string RedactUrl(std::string_view url) {
  std::string_view rest = url;
  std::string out;
  if (size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    out.append(rest.substr(0, scheme + 3));
    rest.remove_prefix(scheme + 3);
  }
  const size_t path = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  out.append(authority);
  if (path == std::string_view::npos) return out;
  rest.remove_prefix(path);
  const size_t tail = rest.find_first_of("?#");
  out.append(rest.substr(0, tail));
  if (tail != std::string_view::npos) out.append("?<redacted>");
  return out;
}

}  // namespace lazypull::registry
