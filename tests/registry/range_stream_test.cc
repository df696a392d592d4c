// Multi-range reads (label unit): the byte-range wire pieces (Range header, Content-Range,
// multipart/byteranges parser) and RegistryClient::StreamRanges against a scripted transport
// that answers as registries do: multipart, a single range, the whole blob, or garbage.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fetcher/oci/media_types.h"
#include "fetcher/registry/byteranges.h"
#include "fetcher/registry/registry_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/registry/fake_transport.h"

namespace lazypull::registry {
namespace {

using ::testing::HasSubstr;

// Bytes received per blob offset; fails the test on a byte delivered twice.
struct Received {
  std::map<uint64_t, char> bytes;
  std::vector<std::pair<uint64_t, uint64_t>> calls;  // (offset, length) per sink call
  absl::Status Add(uint64_t off, std::string_view d) {
    calls.emplace_back(off, d.size());
    for (size_t i = 0; i < d.size(); ++i) {
      if (!bytes.emplace(off + i, d[i]).second) {
        ADD_FAILURE() << "byte " << off + i << " delivered twice";
      }
    }
    return absl::OkStatus();
  }
  std::string Range(uint64_t off, uint64_t len) const {
    std::string out;
    for (uint64_t i = off; i < off + len; ++i) {
      auto it = bytes.find(i);
      if (it == bytes.end()) return out + "<missing>";
      out.push_back(it->second);
    }
    return out;
  }
};

std::string Blob() {
  std::string b;
  for (int i = 0; i < 1000; ++i) b.push_back(static_cast<char>('a' + i % 26));
  return b;
}

// A multipart/byteranges body as Go's net/http writes it.
std::string Multipart(const std::string& blob, const std::vector<ByteRange>& parts,
                      const std::string& boundary = "3d6b6a416f9b5") {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    out += (i == 0 ? "--" : "\r\n--") + boundary + "\r\n";
    out += "Content-Range: bytes " + std::to_string(parts[i].offset) + "-" +
           std::to_string(parts[i].end() - 1) + "/" + std::to_string(blob.size()) + "\r\n";
    out += "Content-Type: application/octet-stream\r\n\r\n";
    out += blob.substr(parts[i].offset, parts[i].length);
  }
  return out + "\r\n--" + boundary + "--\r\n";
}

HttpHeaders MultipartHeaders(const std::string& boundary = "3d6b6a416f9b5") {
  return {{"content-type", "multipart/byteranges; boundary=" + boundary}};
}

TEST(ByterangesTest, HeaderAndContentRange) {
  std::vector<ByteRange> r = {{0, 10}, {100, 1}, {200, 0}, {300, 5}};
  EXPECT_EQ(RangeHeaderValue(r), "bytes=0-9,100-100,300-304");
  auto cr = ParseContentRange(" bytes 5-9/1000");
  ASSERT_TRUE(cr.has_value());
  EXPECT_EQ(cr->offset, 5u);
  EXPECT_EQ(cr->length, 5u);
  EXPECT_EQ(cr->complete_length, 1000u);
  cr = ParseContentRange("bytes 0-0/*");
  ASSERT_TRUE(cr.has_value());
  EXPECT_FALSE(cr->complete_length.has_value());
  EXPECT_FALSE(ParseContentRange("bytes 9-5/100").has_value());
  EXPECT_FALSE(ParseContentRange("items 0-5/100").has_value());
  EXPECT_FALSE(ParseContentRange("bytes 0-x/100").has_value());
  EXPECT_EQ(ByterangesBoundary("multipart/byteranges; boundary=abc"), "abc");
  EXPECT_EQ(ByterangesBoundary("Multipart/ByteRanges;charset=x; boundary=\"a b\""), "a b");
  EXPECT_FALSE(ByterangesBoundary("application/octet-stream").has_value());
  EXPECT_FALSE(ByterangesBoundary("multipart/byteranges").has_value());
}

// Numbers a server chooses must not wrap: a range of 2^64 bytes has no uint64 length, and the
// check that a range lies inside the blob is done without overflow.
TEST(ByterangesTest, ContentRangeArithmeticNeverWraps) {
  EXPECT_FALSE(ParseContentRange("bytes 0-18446744073709551615/*").has_value());
  EXPECT_FALSE(ParseContentRange("bytes 0-18446744073709551615/18446744073709551615"));
  EXPECT_FALSE(ParseContentRange("bytes 0-18446744073709551616/*").has_value());  // > 2^64-1
  EXPECT_FALSE(ParseContentRange("bytes 0-999/999").has_value());  // LAST past COMPLETE
  auto cr = ParseContentRange("bytes 1-18446744073709551615/*");
  ASSERT_TRUE(cr.has_value());
  EXPECT_EQ(cr->length, UINT64_MAX);
  EXPECT_FALSE(ContentRangeInside(*cr, 1000));
  cr = ParseContentRange("bytes 18446744073709551606-18446744073709551615/*");
  ASSERT_TRUE(cr.has_value());
  EXPECT_EQ(cr->length, 10u);
  EXPECT_FALSE(ContentRangeInside(*cr, 1000));  // offset + length wraps to 0
  EXPECT_TRUE(ContentRangeInside(*ParseContentRange("bytes 990-999/1000"), 1000));
  EXPECT_FALSE(ContentRangeInside(*ParseContentRange("bytes 990-999/1001"), 1000));
  EXPECT_FALSE(ContentRangeInside(*ParseContentRange("bytes 991-1000/*"), 1000));
}

TEST(ByterangesTest, ParsesPartsInAnyOrderFedByteByByte) {
  const std::string blob = Blob();
  const std::string body = Multipart(blob, {{500, 20}, {0, 3}, {990, 10}});
  for (size_t piece : {size_t{1}, size_t{7}, body.size()}) {
    ByterangesParser parser("3d6b6a416f9b5", blob.size());
    Received got;
    for (size_t pos = 0; pos < body.size(); pos += piece) {
      ASSERT_TRUE(parser
                      .Feed(std::string_view(body).substr(pos, piece),
                            [&](uint64_t o, std::string_view d) { return got.Add(o, d); })
                      .ok());
    }
    EXPECT_TRUE(parser.Finish().ok());
    EXPECT_EQ(parser.parts(), 3u);
    EXPECT_EQ(got.Range(500, 20), blob.substr(500, 20));
    EXPECT_EQ(got.Range(0, 3), blob.substr(0, 3));
    EXPECT_EQ(got.Range(990, 10), blob.substr(990, 10));
    EXPECT_EQ(got.bytes.size(), 33u);
  }
}

TEST(ByterangesTest, RejectsMalformedBodies) {
  const std::string blob = Blob();
  auto parse = [&](const std::string& body) {
    ByterangesParser parser("B", blob.size());
    absl::Status st =
        parser.Feed(body, [](uint64_t, std::string_view) { return absl::OkStatus(); });
    return st.ok() ? parser.Finish() : st;
  };
  EXPECT_TRUE(parse(Multipart(blob, {{1, 2}}, "B")).ok());
  // No Content-Range in a part.
  absl::Status st = parse("--B\r\nContent-Type: x\r\n\r\nab\r\n--B--\r\n");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("no Content-Range"));
  // A part outside the blob, or naming another blob size.
  EXPECT_EQ(parse("--B\r\nContent-Range: bytes 999-1000/1000\r\n\r\nab\r\n--B--").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(parse("--B\r\nContent-Range: bytes 0-1/77\r\n\r\nab\r\n--B--").code(),
            absl::StatusCode::kDataLoss);
  // Garbage where the next boundary must be.
  st = parse("--B\r\nContent-Range: bytes 0-1/1000\r\n\r\nabXYZ\r\n--B--\r\n");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("expected the boundary"));
  // Body cut short.
  st = parse("--B\r\nContent-Range: bytes 0-9/1000\r\n\r\nabc");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("7 bytes short"));
  // Never a boundary.
  EXPECT_EQ(parse(std::string(20000, 'x')).code(), absl::StatusCode::kDataLoss);
}

class StreamRangesTest : public ::testing::Test {
 protected:
  StreamRangesTest() {
    RegistryConfig config;
    config.config_path = "";
    config.plain_http.insert("reg.test:5000");
    config.initial_backoff = std::chrono::milliseconds(1);
    auto transport = std::make_unique<FakeTransport>();
    fake_ = transport.get();
    fake_->piece_bytes = 13;  // parts and headers split across sink calls
    client_ = std::make_unique<RegistryClient>(config, std::move(transport));
    desc_.media_type = std::string(oci::kOciLayer);
    desc_.digest = Digest::Of(blob_);
    desc_.size = static_cast<int64_t>(blob_.size());
  }

  absl::Status Stream(const std::vector<ByteRange>& ranges, Received* got) {
    return client_->StreamRanges(ref_, desc_, ranges,
                                 [&](uint64_t o, std::string_view d) { return got->Add(o, d); });
  }
  void ExpectAll(const Received& got, const std::vector<ByteRange>& ranges) {
    uint64_t total = 0;
    for (const ByteRange& r : ranges) {
      EXPECT_EQ(got.Range(r.offset, r.length), blob_.substr(r.offset, r.length));
      total += r.length;
    }
    EXPECT_EQ(got.bytes.size(), total);
  }

  const std::string blob_ = Blob();
  const Reference ref_ = *ParseReference("reg.test:5000/app:v1");
  oci::Descriptor desc_;
  FakeTransport* fake_;
  std::unique_ptr<RegistryClient> client_;
};

TEST_F(StreamRangesTest, MultipartAnswerServesAllRangesInOneRequest) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}, {700, 300}};
  // Parts out of order, as a server may send them.
  fake_->answers.push_back(
      Resp(206, Multipart(blob_, {ranges[2], ranges[0], ranges[1]}), MultipartHeaders()));
  Received got;
  ASSERT_TRUE(Stream(ranges, &got).ok());
  ExpectAll(got, ranges);
  ASSERT_EQ(fake_->requests.size(), 1u);
  EXPECT_EQ(fake_->RequestHeader(0, "Range"), "bytes=10-14,100-149,700-999");
  EXPECT_EQ(client_->MultiRangeSupport("reg.test:5000"), true);
}

TEST_F(StreamRangesTest, WholeBlobAnswerStopsEarlyAndTurnsMultiRangeOff) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}};
  fake_->answers.push_back(Resp(200, blob_));
  Received got;
  ASSERT_TRUE(Stream(ranges, &got).ok());
  ExpectAll(got, ranges);
  ASSERT_EQ(fake_->requests.size(), 1u);
  EXPECT_EQ(client_->MultiRangeSupport("reg.test:5000"), false);

  // From now on: one single-range request per range, never a multi-range header.
  fake_->requests.clear();
  fake_->answers_by_range["bytes=0-1"] =
      Resp(206, blob_.substr(0, 2), {{"content-range", "bytes 0-1/1000"}});
  fake_->answers_by_range["bytes=50-51"] =
      Resp(206, blob_.substr(50, 2), {{"content-range", "bytes 50-51/1000"}});
  Received more;
  const std::vector<ByteRange> next = {{0, 2}, {50, 2}};
  ASSERT_TRUE(Stream(next, &more).ok());
  ExpectAll(more, next);
  ASSERT_EQ(fake_->requests.size(), 2u);
  std::vector<std::string> headers = {fake_->RequestHeader(0, "Range"),
                                      fake_->RequestHeader(1, "Range")};
  EXPECT_THAT(headers, ::testing::UnorderedElementsAre("bytes=0-1", "bytes=50-51"));
}

TEST_F(StreamRangesTest, SingleRangeAnswerIsUsedAndTheRestFetchedSingly) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}};
  fake_->answers.push_back(Resp(206, blob_.substr(10, 5), {{"content-range", "bytes 10-14/1000"}}));
  fake_->answers.push_back(
      Resp(206, blob_.substr(100, 50), {{"content-range", "bytes 100-149/1000"}}));
  Received got;
  ASSERT_TRUE(Stream(ranges, &got).ok());
  ExpectAll(got, ranges);
  ASSERT_EQ(fake_->requests.size(), 2u);
  EXPECT_EQ(fake_->RequestHeader(1, "Range"), "bytes=100-149");
  EXPECT_EQ(client_->MultiRangeSupport("reg.test:5000"), false);
}

TEST_F(StreamRangesTest, CutMultipartIsResumedForWhatIsMissing) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}, {700, 30}};
  std::string body = Multipart(blob_, ranges);
  // The body ends in the middle of the second part (a server that closed early): the retry
  // asks only for what is missing.
  fake_->answers.push_back(
      Resp(206, body.substr(0, body.find(blob_.substr(100, 50)) + 20), MultipartHeaders()));
  fake_->answers.push_back(Resp(206, Multipart(blob_, {{120, 30}, {700, 30}}), MultipartHeaders()));
  Received got;
  ASSERT_TRUE(Stream(ranges, &got).ok());
  ExpectAll(got, ranges);
  ASSERT_EQ(fake_->requests.size(), 2u);
  EXPECT_EQ(fake_->RequestHeader(1, "Range"), "bytes=120-149,700-729");
}

TEST_F(StreamRangesTest, MalformedMultipartFailsCleanlyWithoutRetry) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}};
  fake_->answers.push_back(Resp(206, "--B\r\nContent-Range: bytes 10-14/1000\r\n\r\nabcdeGARBAGE",
                                MultipartHeaders("B")));
  Received got;
  absl::Status st = Stream(ranges, &got);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("malformed multipart/byteranges"));
  EXPECT_EQ(fake_->requests.size(), 1u);
  EXPECT_EQ(client_->MultiRangeSupport("reg.test:5000"), false);
}

// A single-range answer whose Content-Range ends at 2^64-1 (offset + length wraps to 0) is a
// malformed answer, not "nothing delivered, fetch the rest elsewhere".
TEST_F(StreamRangesTest, WrappingContentRangeIsRefused) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}};
  fake_->answers.push_back(
      Resp(206, blob_.substr(0, 10),
           {{"content-range", "bytes 18446744073709551606-18446744073709551615/1000"}}));
  Received got;
  absl::Status st = Stream(ranges, &got);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("18446744073709551606-18446744073709551615"));
  EXPECT_EQ(fake_->requests.size(), 1u);
  EXPECT_TRUE(got.bytes.empty());

  // One range: the answer must start where asked and lie inside the blob (a wrong answer is
  // retried: every attempt gets the same).
  fake_->requests.clear();
  for (int i = 0; i < 10; ++i) {
    fake_->answers.push_back(
        Resp(206, blob_.substr(0, 10), {{"content-range", "bytes 10-18446744073709551615/*"}}));
  }
  st = Stream({{10, 5}}, &got);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("does not answer bytes=10-14"));
  EXPECT_TRUE(got.bytes.empty()) << "bytes of offset 0 delivered as offset 10";
  fake_->answers.clear();
}

TEST_F(StreamRangesTest, SinkErrorStopsTheTransfer) {
  const std::vector<ByteRange> ranges = {{10, 5}, {100, 50}};
  fake_->answers.push_back(Resp(206, Multipart(blob_, ranges), MultipartHeaders()));
  absl::Status st = client_->StreamRanges(ref_, desc_, ranges, [](uint64_t, std::string_view) {
    return absl::CancelledError("reader stopping");
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
  EXPECT_EQ(fake_->requests.size(), 1u);
}

TEST_F(StreamRangesTest, RejectsRangesBreakingTheContract) {
  Received got;
  EXPECT_EQ(Stream({{10, 5}, {12, 5}}, &got).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Stream({{995, 10}}, &got).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Stream({{5, 0}}, &got).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fake_->requests.empty());
}

}  // namespace
}  // namespace lazypull::registry
