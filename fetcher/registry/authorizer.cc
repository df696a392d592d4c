#include "fetcher/registry/authorizer.h"

#include <curl/curl.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::registry {
namespace {

std::string UrlEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string HostOf(const std::string& url) {
  auto p = url.find("://");
  std::string rest = p == std::string::npos ? url : url.substr(p + 3);
  return rest.substr(0, rest.find('/'));
}

}  // namespace

std::vector<AuthChallenge> ParseWwwAuthenticate(std::string_view v) {
  std::vector<AuthChallenge> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < v.size() && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) ++i;
  };
  while (true) {
    skip_ws();
    if (i >= v.size()) break;
    size_t start = i;
    while (i < v.size() && v[i] != ' ' && v[i] != ',' && v[i] != '=') ++i;
    std::string token(v.substr(start, i - start));
    if (i < v.size() && v[i] == '=') {
      // A param of the current challenge.
      ++i;
      std::string value;
      if (i < v.size() && v[i] == '"') {
        ++i;
        while (i < v.size() && v[i] != '"') {
          if (v[i] == '\\' && i + 1 < v.size()) ++i;
          value += v[i++];
        }
        ++i;
      } else {
        size_t s = i;
        while (i < v.size() && v[i] != ',' && v[i] != ' ') ++i;
        value = std::string(v.substr(s, i - s));
      }
      if (!out.empty()) out.back().params[absl::AsciiStrToLower(token)] = value;
    } else {
      out.push_back({absl::AsciiStrToLower(token), {}});
    }
  }
  return out;
}

Authorizer::Authorizer(HttpTransport* transport, const CredentialStore* credentials,
                       std::chrono::milliseconds request_timeout)
    : transport_(transport), credentials_(credentials), request_timeout_(request_timeout) {}

int Authorizer::token_fetches() const {
  std::lock_guard<std::mutex> l(mu_);
  return token_fetches_;
}

absl::StatusOr<std::string> Authorizer::HeaderFor(const Reference& ref, const std::string& host,
                                                  const std::string& scope, const TlsOptions& tls) {
  HostState state;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = hosts_.find(host);
    if (it == hosts_.end()) return std::string();
    state = it->second;
    if (state.scheme == "bearer") {
      auto t = tokens_.find(host + " " + scope);
      if (t != tokens_.end() && t->second.expires > std::chrono::steady_clock::now()) {
        return "Bearer " + t->second.value;
      }
    }
  }
  if (state.scheme == "basic") {
    auto creds = credentials_->Lookup(host, ref.host, ref.repository);
    if (!creds.ok()) return creds.status();
    if (creds->username.empty()) return std::string();
    return "Basic " + absl::Base64Escape(creds->username + ":" + creds->password);
  }
  auto token = FetchToken(ref, host, state, scope, tls);
  if (!token.ok()) return token.status();
  std::lock_guard<std::mutex> l(mu_);
  tokens_[host + " " + scope] = *token;
  return "Bearer " + token->value;
}

absl::Status Authorizer::OnUnauthorized(const Reference& ref, const std::string& host,
                                        const std::string& scope, const HttpResponse& response,
                                        const TlsOptions& tls) {
  std::vector<AuthChallenge> challenges;
  for (const auto& h : response.Headers("www-authenticate")) {
    auto c = ParseWwwAuthenticate(h);
    challenges.insert(challenges.end(), c.begin(), c.end());
  }
  const AuthChallenge* chosen = nullptr;
  for (const auto& c : challenges) {
    if (c.scheme == "bearer") chosen = &c;
  }
  if (chosen == nullptr) {
    for (const auto& c : challenges) {
      if (c.scheme == "basic") chosen = &c;
    }
  }
  if (chosen == nullptr) {
    return absl::UnauthenticatedError(fmt::format(
        "registry {} answered 401 without a supported WWW-Authenticate challenge", host));
  }
  HostState state;
  state.scheme = chosen->scheme;
  if (state.scheme == "basic") {
    auto creds = credentials_->Lookup(host, ref.host, ref.repository);
    if (!creds.ok()) return creds.status();
    if (creds->username.empty()) {
      return absl::UnauthenticatedError(
          fmt::format("registry {} requires Basic auth and no credentials are configured", host));
    }
    std::lock_guard<std::mutex> l(mu_);
    hosts_[host] = state;
    return absl::OkStatus();
  }
  auto realm = chosen->params.find("realm");
  if (realm == chosen->params.end() || realm->second.empty()) {
    return absl::UnauthenticatedError(
        fmt::format("registry {}: Bearer challenge without realm", host));
  }
  state.realm = realm->second;
  if (auto s = chosen->params.find("service"); s != chosen->params.end()) state.service = s->second;
  {
    std::lock_guard<std::mutex> l(mu_);
    hosts_[host] = state;
    tokens_.erase(host + " " + scope);
  }
  auto token = FetchToken(ref, host, state, scope, tls);
  if (!token.ok()) return token.status();
  std::lock_guard<std::mutex> l(mu_);
  tokens_[host + " " + scope] = *token;
  return absl::OkStatus();
}

absl::StatusOr<Authorizer::Token> Authorizer::FetchToken(const Reference& ref,
                                                         const std::string& host,
                                                         const HostState& state,
                                                         const std::string& scope,
                                                         const TlsOptions& tls) {
  auto creds = credentials_->Lookup(host, ref.host, ref.repository);
  if (!creds.ok()) return creds.status();
  if (!creds->registry_token.empty()) {
    // Already a bearer token for the registry. Kept briefly so a refreshed one (a new PullImage)
    // is picked up soon.
    return Token{creds->registry_token,
                 std::chrono::steady_clock::now() + std::chrono::seconds(30)};
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    ++token_fetches_;
  }
  HttpRequest req;
  req.timeout = request_timeout_;
  req.max_body_bytes = 1 << 20;
  // The registry host's TLS settings apply when the realm is on the same host.
  if (HostOf(state.realm) == host) req.tls = tls;
  std::string form;
  if (!creds->identity_token.empty()) {
    req.method = "POST";
    req.url = state.realm;
    form = fmt::format(
        "grant_type=refresh_token&client_id=lazypull&service={}&scope={}"
        "&refresh_token={}",
        UrlEncode(state.service), UrlEncode(scope), UrlEncode(creds->identity_token));
    req.body = form;
    req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  } else {
    req.method = "GET";
    std::string sep = state.realm.find('?') == std::string::npos ? "?" : "&";
    req.url = state.realm + sep + "service=" + UrlEncode(state.service);
    for (absl::string_view sc : absl::StrSplit(scope, ' ', absl::SkipEmpty())) {
      req.url += "&scope=" + UrlEncode(std::string_view(sc.data(), sc.size()));
    }
    if (!creds->username.empty()) {
      req.headers.emplace_back(
          "Authorization", "Basic " + absl::Base64Escape(creds->username + ":" + creds->password));
    }
  }
  auto resp = transport_->Send(req);
  if (!resp.ok()) {
    return absl::Status(resp.status().code(),
                        fmt::format("token request for {} (scope {}) failed: {}", host, scope,
                                    std::string(resp.status().message())));
  }
  if (resp->status == 401 || resp->status == 403) {
    return absl::PermissionDeniedError(
        fmt::format("token server {} refused credentials for {} (scope {}): HTTP {}",
                    RedactUrl(state.realm), host, scope, resp->status));
  }
  if (resp->status != 200) {
    return absl::UnavailableError(fmt::format("token server {} for {} answered HTTP {}",
                                              RedactUrl(state.realm), host, resp->status));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(resp->body);
  } catch (const nlohmann::json::exception&) {
    return absl::UnavailableError(
        fmt::format("token server {} for {}: response is not JSON", RedactUrl(state.realm), host));
  }
  Token t;
  if (j.contains("token") && j["token"].is_string()) t.value = j["token"].get<std::string>();
  if (t.value.empty() && j.contains("access_token") && j["access_token"].is_string()) {
    t.value = j["access_token"].get<std::string>();
  }
  if (t.value.empty()) {
    return absl::UnavailableError(
        fmt::format("token server {} for {}: response has no token", RedactUrl(state.realm), host));
  }
  int64_t expires_in = 60;
  if (j.contains("expires_in") && j["expires_in"].is_number_integer()) {
    expires_in = std::max<int64_t>(j["expires_in"].get<int64_t>(), 1);
  }
  // Renew a little early so a token never expires between HeaderFor and the request.
  auto lifetime = std::chrono::seconds(expires_in);
  auto margin = std::min<std::chrono::seconds>(std::chrono::seconds(10), lifetime / 10);
  t.expires = std::chrono::steady_clock::now() + lifetime - margin;
  LogDebug("registry token fetched",
           {{"host", host}, {"scope", scope}, {"expires_in_s", expires_in}});
  return t;
}

}  // namespace lazypull::registry
