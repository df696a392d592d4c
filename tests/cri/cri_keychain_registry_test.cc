// RegistryClient with the CRI keychain as its CredentialProvider, against real docker-registry
// instances (htpasswd Basic auth; Bearer tokens from a real token server): every AuthConfig form
// kubelet can send — username/password, `auth`, identity_token (OAuth2 refresh), registry_token
// — authenticates manifest, blob and range requests, for exactly the repository it came with,
// only while unexpired, and only for its server_address.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "fetcher/registry/registry_client.h"
#include "nlohmann/json.hpp"
#include "server/cri/cri_keychain.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/registry/registry_test_util.h"
#include "tests/registry/token_server.h"

namespace lazypull::testing {
namespace {

using cri::CriAuth;
using cri::CriKeychain;
using registry::Reference;

Reference Ref(const std::string& text) { return *registry::ParseReference(text); }

CriAuth UserPassword(const std::string& u, const std::string& p) {
  CriAuth a;
  a.username = u;
  a.password = p;
  return a;
}

class ManualClock {
 public:
  CriKeychain::Clock AsClock() {
    return [this] { return now_; };
  }
  void Advance(std::chrono::seconds s) { now_ += s; }

 private:
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::now();
};

// A client whose only credentials are the keychain's.
std::unique_ptr<registry::RegistryClient> KeychainClient(std::shared_ptr<CriKeychain> keychain) {
  registry::RegistryConfig config = TestConfig();
  config.max_retries = 0;
  config.credential_provider = std::move(keychain);
  return NewClient(config);
}

TEST(CriKeychainRegistryTest, BasicAuthPerRepositoryFromPullImageCredentials) {
  TempDir dir("lpcrireg");
  RegistryOptions opts;
  opts.basic_user = {{"alice", "s3cret-pw"}};
  auto reg = RegistryProcess::Start(dir.Sub("reg"), opts);
  ASSERT_TRUE(reg.ok()) << reg.status();
  const std::string app = (*reg)->host() + "/private/app:v1";
  const std::string other = (*reg)->host() + "/private/other:v1";
  {
    auto config = TestConfig();
    config.auths[(*reg)->host()].username = "alice";
    config.auths[(*reg)->host()].password = "s3cret-pw";
    auto pusher = NewClient(config);
    ASSERT_TRUE(PushImage(*pusher, Ref(app), {RandomBytes(100000, 1)}).ok());
    ASSERT_TRUE(PushImage(*pusher, Ref(other), {RandomBytes(1000, 2)}).ok());
  }
  ManualClock clock;
  auto keychain = std::make_shared<CriKeychain>(std::chrono::seconds(300), clock.AsClock());
  auto client = KeychainClient(keychain);

  auto denied = client->Resolve(Ref(app));
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kUnauthenticated) << denied.status();

  // What kubelet sends with an image pull secret.
  ASSERT_TRUE(keychain->Remember(app, UserPassword("alice", "s3cret-pw")).ok());
  auto image = client->Resolve(Ref(app));
  ASSERT_TRUE(image.ok()) << image.status();
  const oci::Descriptor layer = image->manifest.layers.at(0);
  auto range = client->ReadRange(Ref(app), layer, 1000, 5000);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(*range, RandomBytes(100000, 1).substr(1000, 5000));

  // Only that repository.
  auto other_repo = client->Resolve(Ref(other));
  EXPECT_EQ(other_repo.status().code(), absl::StatusCode::kUnauthenticated);

  // `auth` form (base64 "alice:s3cret-pw") for the other repository.
  CriAuth b64;
  b64.auth = "YWxpY2U6czNjcmV0LXB3";
  ASSERT_TRUE(keychain->Remember(other, b64).ok());
  EXPECT_TRUE(client->Resolve(Ref(other)).ok());

  // A server_address naming another host does not apply here.
  CriAuth elsewhere = UserPassword("alice", "s3cret-pw");
  elsewhere.server_address = "https://registry.elsewhere.example";
  ASSERT_TRUE(keychain->Remember(other, elsewhere).ok());
  EXPECT_EQ(client->Resolve(Ref(other)).status().code(), absl::StatusCode::kUnauthenticated);
  CriAuth here = UserPassword("alice", "s3cret-pw");
  here.server_address = "http://" + (*reg)->host();
  ASSERT_TRUE(keychain->Remember(other, here).ok());
  EXPECT_TRUE(client->Resolve(Ref(other)).ok());

  // Wrong password: Unauthenticated, and the password is nowhere in the error.
  ASSERT_TRUE(keychain->Remember(other, UserPassword("alice", "wrong-pw-123")).ok());
  auto wrong = client->Resolve(Ref(other));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(absl::StrContains(wrong.status().message(), "wrong-pw-123"));

  // Expired credentials stop working, for range reads of a layer already resolved too.
  clock.Advance(std::chrono::seconds(301));
  auto expired = client->ReadRange(Ref(app), layer, 0, 100);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnauthenticated) << expired.status();
  EXPECT_EQ(keychain->size(), 0u);
}

TEST(CriKeychainRegistryTest, TokenAuthWithPasswordIdentityTokenAndRegistryToken) {
  TempDir dir("lpcritok");
  auto tokens = TokenServer::Start(dir.path(), "bob", "tok-pw");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  RegistryOptions opts;
  opts.token = RegistryOptions::Token{(*tokens)->realm(), TokenServer::kService,
                                      TokenServer::kIssuer, (*tokens)->cert_path()};
  auto reg = RegistryProcess::Start(dir.Sub("reg"), opts);
  ASSERT_TRUE(reg.ok()) << reg.status();
  const std::string app = (*reg)->host() + "/secure/app:v1";
  std::string blob = RandomBytes(70000, 3);
  registry::RegistryConfig push_config = TestConfig();
  push_config.auths[(*reg)->host()].username = "bob";
  push_config.auths[(*reg)->host()].password = "tok-pw";
  auto pushed = PushImage(*NewClient(push_config), Ref(app), {blob});
  ASSERT_TRUE(pushed.ok()) << pushed.status();

  // username/password: the token server is asked with them.
  {
    auto keychain = std::make_shared<CriKeychain>(std::chrono::seconds(300));
    ASSERT_TRUE(keychain->Remember(app, UserPassword("bob", "tok-pw")).ok());
    auto got = KeychainClient(keychain)->FetchBlob(Ref(app), pushed->layers[0]);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, blob);
  }
  // identity_token: an OAuth2 refresh-token POST to the realm.
  {
    (*tokens)->AcceptRefreshToken("refresh-xyz");
    int before = (*tokens)->oauth_requests();
    auto keychain = std::make_shared<CriKeychain>(std::chrono::seconds(300));
    CriAuth id;
    id.identity_token = "refresh-xyz";
    ASSERT_TRUE(keychain->Remember(app, id).ok());
    auto got = KeychainClient(keychain)->FetchBlob(Ref(app), pushed->layers[0]);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ((*tokens)->oauth_requests() - before, 1);
  }
  // registry_token: a ready bearer token — sent as is, the token server is not asked.
  {
    auto r = RunShell("curl -sf -u bob:tok-pw '" + (*tokens)->realm() + "?service=" +
                          TokenServer::kService + "&scope=repository:secure/app:pull'",
                      std::chrono::seconds(20));
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->exit_code, 0) << r->output;
    std::string token = nlohmann::json::parse(r->output).value("token", "");
    ASSERT_FALSE(token.empty()) << r->output;
    int before = (*tokens)->token_requests();
    auto keychain = std::make_shared<CriKeychain>(std::chrono::seconds(300));
    CriAuth rt;
    rt.registry_token = token;
    ASSERT_TRUE(keychain->Remember(app, rt).ok());
    auto client = KeychainClient(keychain);
    auto got = client->FetchBlob(Ref(app), pushed->layers[0]);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, blob);
    auto range = client->ReadRange(Ref(app), pushed->layers[0], 10, 10);
    ASSERT_TRUE(range.ok()) << range.status();
    EXPECT_EQ((*tokens)->token_requests(), before);
  }
  // Wrong password: the token server's refusal, no secret in the error.
  {
    auto keychain = std::make_shared<CriKeychain>(std::chrono::seconds(300));
    ASSERT_TRUE(keychain->Remember(app, UserPassword("bob", "not-the-pw")).ok());
    auto st = KeychainClient(keychain)->Resolve(Ref(app)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
    EXPECT_FALSE(absl::StrContains(st.message(), "not-the-pw"));
  }
}

}  // namespace
}  // namespace lazypull::testing
