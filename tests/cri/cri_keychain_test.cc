// CriKeychain (which credentials an AuthConfig yields, for which repository and host, how long)
// and the [cri_keychain] config section. Pure logic: no processes, no sockets.
#include "server/cri/cri_keychain.h"

#include <gtest/gtest.h>
#include <toml++/toml.h>

#include <thread>
#include <vector>

#include "fetcher/registry/credentials.h"
#include "server/cri/cri_keychain_config.h"

namespace lazypull::cri {
namespace {

using std::chrono::seconds;
using std::chrono::steady_clock;

class FakeClock {
 public:
  steady_clock::time_point Now() const { return now_; }
  void Advance(seconds s) { now_ += s; }
  CriKeychain::Clock AsClock() {
    return [this] { return Now(); };
  }

 private:
  steady_clock::time_point now_ = steady_clock::time_point() + std::chrono::hours(1000);
};

CriAuth UserPassword(const std::string& u, const std::string& p) {
  CriAuth a;
  a.username = u;
  a.password = p;
  return a;
}

TEST(CriKeychainTest, CredentialsAreKeptPerRegistryAndRepository) {
  FakeClock clock;
  CriKeychain kc(seconds(60), clock.AsClock());
  auto t = kc.Remember("127.0.0.1:5000/team/app:v1", UserPassword("alice", "pw1"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(*t, 0u);
  auto c = kc.Find("127.0.0.1:5000", "team/app", "127.0.0.1:5000");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->username, "alice");
  EXPECT_EQ(c->password, "pw1");
  // Any tag or digest of the repository, and a mirror of the registry, get them too.
  auto d = kc.Remember("127.0.0.1:5000/team/app@sha256:" + std::string(64, 'a'),
                       UserPassword("alice", "pw1"));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(kc.Find("127.0.0.1:5000", "team/app", "mirror.local:443").has_value());
  // Another repository or registry does not.
  EXPECT_FALSE(kc.Find("127.0.0.1:5000", "team/other", "127.0.0.1:5000").has_value());
  EXPECT_FALSE(kc.Find("127.0.0.1:5001", "team/app", "127.0.0.1:5001").has_value());
  EXPECT_EQ(kc.size(), 1u);
}

TEST(CriKeychainTest, DockerHubNamesAreNormalised) {
  CriKeychain kc(seconds(60));
  ASSERT_TRUE(kc.Remember("busybox", UserPassword("hubuser", "hubpw")).ok());
  auto c = kc.Find("docker.io", "library/busybox", "registry-1.docker.io");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->username, "hubuser");
  EXPECT_TRUE(kc.Find("index.docker.io", "library/busybox", "docker.io").has_value());
  EXPECT_FALSE(kc.Find("docker.io", "busybox", "docker.io").has_value());
}

TEST(CriKeychainTest, EntriesExpire) {
  FakeClock clock;
  CriKeychain kc(seconds(60), clock.AsClock());
  ASSERT_TRUE(kc.Remember("reg.io/a:v1", UserPassword("u", "p")).ok());
  clock.Advance(seconds(59));
  EXPECT_TRUE(kc.Find("reg.io", "a", "reg.io").has_value());
  // A new PullImage renews the lifetime.
  ASSERT_TRUE(kc.Remember("reg.io/a:v2", UserPassword("u", "p2")).ok());
  clock.Advance(seconds(59));
  auto c = kc.Find("reg.io", "a", "reg.io");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->password, "p2");
  clock.Advance(seconds(1));
  EXPECT_FALSE(kc.Find("reg.io", "a", "reg.io").has_value());
  EXPECT_EQ(kc.size(), 0u);
}

TEST(CriKeychainTest, ForgetRestoresWhatAFailedPullReplaced) {
  FakeClock clock;
  CriKeychain kc(seconds(60), clock.AsClock());
  auto good = kc.Remember("reg.io/a:v1", UserPassword("u", "good"));
  ASSERT_TRUE(good.ok());
  auto bad = kc.Remember("reg.io/a:v1", UserPassword("u", "bad"));
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(kc.Find("reg.io", "a", "reg.io")->password, "bad");
  kc.Forget(*bad);
  EXPECT_EQ(kc.Find("reg.io", "a", "reg.io")->password, "good");
  kc.Forget(*bad);   // twice: no-op
  kc.Forget(*good);  // retired when replaced: no-op
  EXPECT_EQ(kc.Find("reg.io", "a", "reg.io")->password, "good");

  // A failed first pull leaves nothing.
  auto only = kc.Remember("reg.io/b:v1", UserPassword("u", "x"));
  ASSERT_TRUE(only.ok());
  kc.Forget(*only);
  EXPECT_FALSE(kc.Find("reg.io", "b", "reg.io").has_value());

  // Forget of a replaced entry does not touch its successor.
  auto first = kc.Remember("reg.io/c:v1", UserPassword("u", "1"));
  auto second = kc.Remember("reg.io/c:v1", UserPassword("u", "2"));
  kc.Forget(*first);
  EXPECT_EQ(kc.Find("reg.io", "c", "reg.io")->password, "2");

  // The replaced entry comes back only while it has not expired.
  auto old_entry = kc.Remember("reg.io/d:v1", UserPassword("u", "old"));
  clock.Advance(seconds(50));
  auto newer = kc.Remember("reg.io/d:v1", UserPassword("u", "new"));
  clock.Advance(seconds(20));
  kc.Forget(*newer);
  EXPECT_FALSE(kc.Find("reg.io", "d", "reg.io").has_value());
  (void)old_entry;
  kc.Forget(0);
}

TEST(CriKeychainTest, AuthConfigFormsAsContainerdReadsThem) {
  std::optional<std::string> server;
  // username wins over everything else.
  CriAuth a = UserPassword("u", "p");
  a.identity_token = "idt";
  a.auth = "eDp5";  // x:y
  auto c = CredentialsFromCriAuth(a, &server);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->username, "u");
  EXPECT_EQ((*c)->password, "p");
  EXPECT_TRUE((*c)->identity_token.empty());
  EXPECT_FALSE(server.has_value());

  // identity_token next: an OAuth2 refresh token, no username.
  CriAuth id;
  id.identity_token = "refresh-me";
  id.auth = "eDp5";
  c = CredentialsFromCriAuth(id, &server);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->identity_token, "refresh-me");
  EXPECT_TRUE((*c)->username.empty());

  // auth: base64 "user:password"; a password may contain ':'; NUL padding is trimmed.
  CriAuth b64;
  b64.auth = "YWxpY2U6cHc6d2l0aDpjb2xvbnMAAA==";  // "alice:pw:with:colons\0\0"
  c = CredentialsFromCriAuth(b64, &server);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->username, "alice");
  EXPECT_EQ((*c)->password, "pw:with:colons");
  CriAuth broken;
  broken.auth = "bm9jb2xvbg==";  // "nocolon"
  EXPECT_EQ(CredentialsFromCriAuth(broken, &server).status().code(),
            absl::StatusCode::kInvalidArgument);
  broken.auth = "%%%";
  auto st = CredentialsFromCriAuth(broken, &server).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message().find("%%%"), std::string::npos);

  // registry_token last (containerd 1.6 ignores it; lazypull sends it as the bearer token).
  CriAuth rt;
  rt.registry_token = "bearer-token";
  c = CredentialsFromCriAuth(rt, &server);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->registry_token, "bearer-token");

  // Nothing usable: no credentials (anonymous, like containerd).
  CriAuth empty;
  empty.server_address = "https://reg.io";
  c = CredentialsFromCriAuth(empty, &server);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TEST(CriKeychainTest, ServerAddressLimitsTheHost) {
  CriKeychain kc(seconds(60));
  CriAuth a = UserPassword("u", "p");
  a.server_address = "https://reg.io:5000/v2/";
  ASSERT_TRUE(kc.Remember("reg.io:5000/app:v1", a).ok());
  EXPECT_TRUE(kc.Find("reg.io:5000", "app", "reg.io:5000").has_value());
  EXPECT_FALSE(kc.Find("reg.io:5000", "app", "mirror.io").has_value());

  // Kubelet's Docker Hub key.
  CriAuth hub = UserPassword("u", "p");
  hub.server_address = "https://index.docker.io/v1/";
  ASSERT_TRUE(kc.Remember("docker.io/library/alpine:3", hub).ok());
  EXPECT_TRUE(kc.Find("docker.io", "library/alpine", "registry-1.docker.io").has_value());

  // An address without a scheme has no URL host (Go's url.Parse): it matches no host.
  CriAuth bare = UserPassword("u", "p");
  bare.server_address = "reg.io";
  ASSERT_TRUE(kc.Remember("reg.io/app:v1", bare).ok());
  EXPECT_FALSE(kc.Find("reg.io", "app", "reg.io").has_value());
}

TEST(CriKeychainTest, NothingKeptWithoutASecretOrForABadReference) {
  CriKeychain kc(seconds(60));
  auto t = kc.Remember("reg.io/app:v1", CriAuth{});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 0u);
  CriAuth broken;
  broken.auth = "!!";
  t = kc.Remember("reg.io/app:v1", broken);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 0u);
  auto bad = kc.Remember("Not A Reference", UserPassword("u", "topsecret"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message().find("topsecret"), std::string::npos);
  EXPECT_EQ(kc.size(), 0u);
}

TEST(CriKeychainTest, ConcurrentUse) {
  CriKeychain kc(seconds(60));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&kc, t] {
      for (int i = 0; i < 500; ++i) {
        std::string repo = "r" + std::to_string(i % 7);
        auto ticket = kc.Remember("reg.io/" + repo + ":v1", UserPassword("u", std::to_string(t)));
        ASSERT_TRUE(ticket.ok());
        (void)kc.Find("reg.io", repo, "reg.io");
        if (i % 3 == 0) kc.Forget(*ticket);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(kc.size(), 7u);
}

TEST(CriKeychainTest, CredentialStoreAsksTheKeychainFirst) {
  auto kc = std::make_shared<CriKeychain>(seconds(60));
  registry::HostCredentials toml_creds;
  toml_creds.username = "toml-user";
  toml_creds.password = "toml-pw";
  registry::CredentialStore store({{"reg.io", toml_creds}}, "", kc);
  EXPECT_EQ(store.Lookup("reg.io", "reg.io", "app")->username, "toml-user");
  ASSERT_TRUE(kc->Remember("reg.io/app:v1", UserPassword("cri-user", "cri-pw")).ok());
  EXPECT_EQ(store.Lookup("reg.io", "reg.io", "app")->username, "cri-user");
  EXPECT_EQ(store.Lookup("reg.io", "reg.io", "other")->username, "toml-user");
  EXPECT_EQ(store.Lookup("reg.io")->username, "toml-user");
}

TEST(CriKeychainConfigTest, DefaultsAndStargzCompatibleNames) {
  auto none = CriKeychainConfigFromToml(toml::table{});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->enable_keychain);
  EXPECT_EQ(none->image_service_path, "/run/containerd/containerd.sock");
  EXPECT_EQ(none->BackendTarget(), "unix:/run/containerd/containerd.sock");
  EXPECT_EQ(none->credential_ttl, seconds(86400));

  auto doc = toml::parse(
      "[cri_keychain]\nenable_keychain = true\n"
      "image_service_path = \"/x/containerd.sock\"\ncredential_ttl_sec = 600\n");
  auto c = CriKeychainConfigFromToml(doc);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->enable_keychain);
  EXPECT_EQ(c->image_service_path, "/x/containerd.sock");
  EXPECT_EQ(c->credential_ttl, seconds(600));
  c->image_service_path = "unix:///x/y.sock";
  EXPECT_EQ(c->BackendTarget(), "unix:///x/y.sock");
}

TEST(CriKeychainConfigTest, BadValuesNameTheKey) {
  for (const char* text :
       {"[cri_keychain]\nenable_keychain = \"yes\"\n", "[cri_keychain]\nimage_service_path = 3\n",
        "[cri_keychain]\nimage_service_path = \"\"\n", "[cri_keychain]\ncredential_ttl_sec = 0\n",
        "[cri_keychain]\nenable_keychian = true\n", "cri_keychain = 1\n"}) {
    auto c = CriKeychainConfigFromToml(toml::parse(text));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(c.status().message().find("cri_keychain"), std::string::npos) << c.status();
  }
}

}  // namespace
}  // namespace lazypull::cri
