// The hand-written TOC JSON parser against the nlohmann-based one it replaced
// (tests/format/toc_json_reference.h): same accepted inputs, same entries, same error codes,
// on crafted edge cases and on every truncation and many byte mutations of real TOCs.
#include "fetcher/format/toc_json.h"

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "fetcher/format/toc_common.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/format/test_blob_builder.h"
#include "tests/format/toc_json_reference.h"

namespace lazypull::format {
namespace {

using namespace std::string_literals;

using testing::RefTocEntry;
using testing::RefTocHeader;

struct Outcome {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
  RefTocHeader header;
  std::vector<RefTocEntry> entries;
};

RefTocEntry Copy(const TocEntry& e) {
  RefTocEntry r;
  r.name = e.name;
  r.type = e.type;
  r.link_name = e.link_name;
  r.modtime = e.modtime;
  r.user_name = e.user_name;
  r.group_name = e.group_name;
  r.digest = e.digest;
  r.chunk_digest = e.chunk_digest;
  r.chunk_type = e.chunk_type;
  r.mode = e.mode;
  r.size = e.size;
  r.uid = e.uid;
  r.gid = e.gid;
  r.dev_major = e.dev_major;
  r.dev_minor = e.dev_minor;
  r.offset = e.offset;
  r.end_offset = e.end_offset;
  r.inner_offset = e.inner_offset;
  r.chunk_offset = e.chunk_offset;
  r.chunk_size = e.chunk_size;
  r.xattrs = e.xattrs;
  return r;
}

Outcome New(std::string_view json) {
  Outcome o;
  TocHeader h;
  absl::Status st = ParseTocJson(json, &h, [&o](TocEntry& e) {
    o.entries.push_back(Copy(e));
    return absl::OkStatus();
  });
  o.code = st.code();
  o.message = std::string(st.message());
  o.header.version = h.version;
  o.header.tar_split_digest = h.tar_split_digest;
  return o;
}

Outcome Old(std::string_view json) {
  Outcome o;
  absl::Status st = testing::ParseTocJsonReference(json, &o.header, [&o](RefTocEntry& e) {
    o.entries.push_back(e);
    return absl::OkStatus();
  });
  o.code = st.code();
  o.message = std::string(st.message());
  return o;
}

std::string Describe(const RefTocEntry& e) {
  std::string x;
  for (const auto& [k, v] : e.xattrs) x += k + "=" + v + ";";
  return fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{} {} {} {} {} {} {} {} {} {} {}|{}", e.name,
                     e.type, e.link_name, e.modtime, e.user_name, e.group_name, e.digest,
                     e.chunk_digest, e.chunk_type, e.mode, e.size, e.uid, e.gid, e.dev_major,
                     e.dev_minor, e.offset, e.end_offset, e.inner_offset, e.chunk_offset,
                     e.chunk_size, x);
}

// Same verdict, same entries delivered (before any error), same header.
void ExpectSame(std::string_view json) {
  Outcome n = New(json);
  Outcome o = Old(json);
  std::string shown(json.substr(0, 300));
  ASSERT_EQ(n.code == absl::StatusCode::kOk, o.code == absl::StatusCode::kOk)
      << shown << "\nnew: " << n.message << "\nold: " << o.message;
  EXPECT_EQ(n.code, o.code) << shown << "\nnew: " << n.message << "\nold: " << o.message;
  ASSERT_EQ(n.entries.size(), o.entries.size()) << shown << "\nnew: " << n.message;
  for (size_t i = 0; i < n.entries.size(); ++i) {
    EXPECT_EQ(Describe(n.entries[i]), Describe(o.entries[i])) << shown;
  }
  if (n.code == absl::StatusCode::kOk) {
    EXPECT_EQ(n.header.version, o.header.version) << shown;
    EXPECT_EQ(n.header.tar_split_digest, o.header.tar_split_digest) << shown;
  }
}

std::string Toc(std::string_view entries) {
  return fmt::format(R"({{"version":1,"entries":[{}]}})", entries);
}

TEST(TocJsonTest, EdgeCasesAgreeWithTheReference) {
  const std::vector<std::string> cases = {
      "",
      " ",
      "{}",
      "[]",
      "5",
      "\"x\"",
      "null",
      "true",
      "nul",
      "{",
      "{\"version\":1}",
      "{\"version\":1,}",
      "{\"version\":1} x",
      "{\"version\":1}\n\t\r ",
      "{\"version\":1}\0garbage"s,
      "{\"version\":1} \0"s,
      "\0{\"version\":1}"s,
      "{\"version\":1,\0}"s,
      "{\"version\":\0}"s,
      "\xef\xbb\xbf{\"version\":1}",
      "\xef\xbb{\"version\":1}",
      "{\"version\":2}",
      "{\"version\":-1}",
      "{\"version\":1.5}",
      "{\"version\":\"1\"}",
      "{\"version\":null,\"entries\":[]}",
      "{\"version\":{\"a\":[1,2]},\"entries\":[]}",
      "{\"version\":18446744073709551616}",
      "{\"version\":9223372036854775808}",
      "{\"entries\":5}",
      "{\"entries\":{}}",
      "{\"entries\":\"x\"}",
      "{\"entries\":null}",
      "{\"entries\":1.5}",
      "{\"entries\":[5]}",
      "{\"entries\":[1.5]}",
      "{\"entries\":[null]}",
      "{\"entries\":[[1.5,{\"size\":-1}]]}",
      "{\"entries\":[{},]}",
      "{\"entries\":[{}],\"entries\":[{\"name\":\"b\"}]}",
      "{\"size\":1.5,\"x\":{\"size\":2.5,\"y\":[1e300,-0.0,1e-400]}}",
      "{\"x\":1e400}",
      "{\"x\":-1e309}",
      "{\"x\":1.7976931348623157e308}",
      "{\"x\":1.7976931348623159e308}",
      "{\"x\":" + std::string(400, '9') + "}",
      "{\"x\":-" + std::string(400, '9') + "}",
      "{\"x\":" + std::string(300, '9') + "}",
      "{\"tarSplitDigest\":\"sha256:ab\",\"entries\":[]}",
      "{\"tarSplitDigest\":5,\"entries\":[]}",
      "{\"tarSplitDigest\":\"a\\u00fcb\"}",
      // Strings: escapes, unicode, invalid UTF-8, control bytes.
      Toc(R"({"name":"a\"b\\c\/d\b\f\n\r\t"})"),
      Toc(R"({"name":"\u00fc\u20ac\ud83d\ude00\u0041"})"),
      Toc(R"({"name":"\u0000"})"),
      Toc(R"({"name":"\ud83d"})"),
      Toc(R"({"name":"\ud83dx"})"),
      Toc(R"({"name":"\ud83d\u0041"})"),
      Toc(R"({"name":"\ude00"})"),
      Toc(R"({"name":"\u12g4"})"),
      Toc(R"({"name":"\u12"})"),
      Toc(R"({"name":"\x"})"),
      Toc("{\"name\":\"zzz name with spaces \xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80\"}"),
      Toc("{\"name\":\"\xc0\x80\"}"),
      Toc("{\"name\":\"\xc3\"}"),
      Toc("{\"name\":\"\xed\xa0\x80\"}"),
      Toc("{\"name\":\"\xf4\x90\x80\x80\"}"),
      Toc("{\"name\":\"\xf5\x80\x80\x80\"}"),
      Toc("{\"name\":\"\xe0\x80\xaf\"}"),
      Toc("{\"name\":\"\xef\xbf\xbf\"}"),
      Toc("{\"name\":\"a\tb\"}"),
      Toc("{\"name\":\"a\x7f\"}"),
      Toc("{\"n\\u0061me\":\"escaped key\"}"),
      Toc("{\"name\":\"abcdefghijklmnopqrstuvwxyz0123456789\\\\escape after the fast path\"}"),
      // Numbers.
      Toc(R"({"size":0,"mode":420,"uid":4294967296,"offset":9223372036854775807})"),
      Toc(R"({"size":9223372036854775808})"),
      Toc(R"({"size":18446744073709551615})"),
      Toc(R"({"size":18446744073709551616})"),
      Toc(R"({"size":-1})"),
      Toc(R"({"size":-0})"),
      Toc(R"({"size":-0.0})"),
      Toc(R"({"size":1.0})"),
      Toc(R"({"size":1e3})"),
      Toc(R"({"size":1E+3})"),
      Toc(R"({"size":1e30})"),
      Toc(R"({"size":-9223372036854775808})"),
      Toc(R"({"size":-9223372036854775809})"),
      Toc(R"({"size":01})"),
      Toc(R"({"size":1.})"),
      Toc(R"({"size":.5})"),
      Toc(R"({"size":+1})"),
      Toc(R"({"size":-})"),
      Toc(R"({"size":1e})"),
      Toc(R"({"size":"12"})"),
      Toc(R"({"size":null,"mode":true,"uid":false})"),
      Toc(R"({"size":[1]})"),
      Toc(R"({"size":{}})"),
      // Known string fields with other types.
      Toc(R"({"name":5})"),
      Toc(R"({"name":-5})"),
      Toc(R"({"name":1.5})"),
      Toc(R"({"name":null,"type":true})"),
      Toc(R"({"name":[]})"),
      Toc(R"({"name":{"a":1}})"),
      // Duplicate keys: the last one wins; duplicate xattrs are both kept.
      Toc(R"({"name":"a","name":"b","size":1,"size":2})"),
      Toc(R"({"name":"a\n","name":"b"})"),
      Toc(R"({"xattrs":{"user.a":"eA==","user.a":"eQ=="}})"),
      Toc(R"({"xattrs":{"user.a":"eA=="},"xattrs":{"user.b":"eQ=="}})"),
      // Xattrs.
      Toc(R"({"xattrs":{"user.\u00fc":"\u0041A=="}})"),
      Toc(R"({"xattrs":{"user.a":5}})"),
      Toc(R"({"xattrs":{"user.a":1.5}})"),
      Toc(R"({"xattrs":{"user.a":null}})"),
      Toc(R"({"xattrs":{"user.a":{"x":[1,{"y":2}]},"user.b":"eA=="}})"),
      Toc(R"({"xattrs":[]})"),
      Toc(R"({"xattrs":"x"})"),
      Toc(R"({"xattrs":5})"),
      Toc(R"({"xattrs":{}})"),
      // Unknown fields of every shape, deep nesting.
      Toc(R"({"accesstime":"x","unknown":{"a":[{"b":{"c":[[[]]]}}],"d":1.5e-7},"name":"a"})"),
      Toc(std::string(2000, '[') + std::string(2000, ']')),
      Toc("{\"deep\":" + std::string(5000, '[') + std::string(5000, ']') + ",\"name\":\"a\"}"),
      Toc("{\"deep\":" + std::string(5000, '[') + std::string(4999, ']') + "}"),
      Toc(R"({"deep":[1 2]})"),
      Toc(R"({"deep":{"a" 1}})"),
      Toc(R"({"deep":{"a":1,}})"),
      Toc(R"({"deep":{1:1}})"),
      Toc(R"({"deep":[1,]})"),
      Toc(R"({"deep":[}]})"),
      Toc(R"({"deep":tru})"),
      Toc(R"({"deep":truex})"),
      Toc(R"({"deep":"a\u00"})"),
      // Whitespace everywhere.
      " { \"version\" : 1 , \"entries\" : [ { \"name\" : \"a\" , \"size\" : 1 } , { } ] } ",
  };
  for (const std::string& c : cases) {
    SCOPED_TRACE(c.substr(0, 200));
    ExpectSame(c);
  }
}

// The shared sample layer, plus a name the TOC must escape.
std::vector<testing::TestEntry> SampleEntries() {
  std::vector<testing::TestEntry> e = testing::SampleLayerEntries();
  e.push_back({.name = "./zzz \"q\" \\ tab\t", .type = '0', .data = "x"});
  return e;
}

// A real TOC as the test writer makes it, cut at every byte and with bytes replaced.
TEST(TocJsonTest, TruncationsAndMutationsOfARealTocAgree) {
  testing::BuiltBlob b = testing::BuildEstargz(SampleEntries(), {.chunk_size = 100000});
  const std::string& json = b.toc_json;
  ASSERT_GT(json.size(), 500u);
  ExpectSame(json);
  for (size_t n = 0; n < json.size(); ++n) ExpectSame(std::string_view(json).substr(0, n));
  const std::string replacements = "\"\\{}[],:0-.eE \x01\x80\xc3\xff"s + "atn";
  for (size_t i = 0; i < json.size(); i += 3) {
    for (char r : replacements) {
      std::string m = json;
      m[i] = r;
      ExpectSame(m);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST(TocJsonTest, DecodesEscapesAndReportsBytePositions) {
  std::vector<std::string> names;
  absl::Status st = ParseTocJson(Toc(R"({"name":"a\u00fc\ud83d\ude00\/b"},{"name":"plain"})"),
                                 nullptr, [&names](TocEntry& e) {
                                   names.emplace_back(e.name);
                                   return absl::OkStatus();
                                 });
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "a\xc3\xbc\xf0\x9f\x98\x80/b");
  EXPECT_EQ(names[1], "plain");

  auto error = [](std::string_view json) {
    return ParseTocJson(json, nullptr, [](TocEntry&) { return absl::OkStatus(); });
  };
  absl::Status bad = error("{\"version\":1,\"entries\":[{\"name\":\"a\x01\"}]}");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("at byte 34"), std::string::npos) << bad;
  bad = error(Toc(R"({"name":"a"},{"size":-1})"));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("TOC entry 1: field \"size\" is negative or too large"),
            std::string::npos)
      << bad;
  EXPECT_NE(bad.message().find("at byte 47"), std::string::npos) << bad;
  bad = error(Toc(R"({"size":1e30})"));
  EXPECT_NE(bad.message().find("field \"size\" is not an integer"), std::string::npos) << bad;
  bad = error("{\"version\":3,\"entries\":[]}");
  EXPECT_EQ(bad.message(), "unsupported TOC version 3 (want 1)");
}

TEST(TocJsonTest, CallbackErrorStopsTheParse) {
  int calls = 0;
  absl::Status st =
      ParseTocJson(Toc(R"({"name":"a"},{"name":"b"},{"name":"c"})"), nullptr, [&calls](TocEntry&) {
        return ++calls == 2 ? absl::DataLossError("stop here") : absl::OkStatus();
      });
  EXPECT_EQ(st, absl::DataLossError("stop here"));
  EXPECT_EQ(calls, 2);
}

// The fast path for the writers' form must agree with absl::ParseTime on every input.
TEST(TocCommonTest, Rfc3339FastPathAgreesWithAbsl) {
  std::vector<std::string> inputs = {
      "2023-11-14T22:13:20Z",
      "2023-11-14T22:13:20.123456789Z",
      "2023-11-14T22:13:20.1Z",
      "1970-01-01T00:00:00Z",
      "1969-12-31T23:59:59.5Z",
      "0001-01-01T00:00:00Z",
      "2000-02-29T12:00:00Z",
      "1900-02-29T12:00:00Z",
      "2023-02-29T00:00:00Z",
      "2024-02-29T23:59:59Z",
      "2023-04-31T00:00:00Z",
      "2023-13-01T00:00:00Z",
      "2023-00-01T00:00:00Z",
      "2023-01-00T00:00:00Z",
      "2023-01-01T24:00:00Z",
      "2023-01-01T23:60:00Z",
      "2016-12-31T23:59:60Z",
      "2023-11-14T22:13:20.Z",
      "2023-11-14T22:13:20.1234567890Z",
      "2023-11-14t22:13:20z",
      "2023-11-14T22:13:20+01:00",
      "2023-11-14 22:13:20Z",
      "9999-12-31T23:59:59.999999999Z",
      "2023-1a-14T22:13:20Z",
      "+2023-11-14T22:13:20Z",
      "2023-11-14T22:13:20.12a4Z",
  };
  for (int y : {1600, 1700, 1999, 2038, 2100, 2400}) {
    for (int m = 1; m <= 12; ++m) {
      inputs.push_back(fmt::format("{:04}-{:02}-28T01:02:03Z", y, m));
      inputs.push_back(fmt::format("{:04}-{:02}-31T23:59:59.000001Z", y, m));
      inputs.push_back(fmt::format("{:04}-{:02}-29T00:00:00Z", y, m));
      inputs.push_back(fmt::format("{:04}-{:02}-30T12:30:30.5Z", y, m));
    }
  }
  for (const std::string& in : inputs) {
    int64_t sec = -1;
    uint32_t nsec = 7;
    absl::Status st = ParseRfc3339(in, &sec, &nsec);
    absl::Time t;
    std::string err;
    bool ok = absl::ParseTime(absl::RFC3339_full, in, &t, &err);
    ASSERT_EQ(st.ok(), ok) << in << ": " << st << " / " << err;
    if (!ok) continue;
    absl::Duration d = t - absl::UnixEpoch();
    int64_t want_sec = absl::ToInt64Seconds(d);
    absl::Duration rem = d - absl::Seconds(want_sec);
    if (rem < absl::ZeroDuration()) {
      want_sec -= 1;
      rem += absl::Seconds(1);
    }
    EXPECT_EQ(sec, want_sec) << in;
    EXPECT_EQ(nsec, absl::ToInt64Nanoseconds(rem)) << in;
  }
}

TEST(TocCommonTest, Sha256FastPathKeepsDigestParseRules) {
  std::array<uint8_t, 32> out{};
  const std::string hex(64, 'a');
  EXPECT_TRUE(ParseSha256("sha256:" + hex, "d", &out).ok());
  EXPECT_EQ(out[0], 0xaa);
  EXPECT_EQ(out[31], 0xaa);
  EXPECT_EQ(ParseSha256("sha256:" + std::string(64, 'A'), "d", &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSha256("sha256:" + hex.substr(1), "d", &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSha256("sha512:" + hex, "d", &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSha256("sha256:" + hex.substr(1) + "g", "d", &out).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::format
