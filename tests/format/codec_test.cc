#include <string>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/stream_decoder.h"
#include "fetcher/codec/zstd.h"
#include "gtest/gtest.h"

namespace lazypull::codec {
namespace {

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  uint32_t x = 12345;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245 + 12345;
    s[i] = static_cast<char>((x >> 16) % 7 + 'a');
  }
  return s;
}

TEST(GzipTest, RoundTripsOneMember) {
  std::string data = Pattern(100000);
  auto gz = GzipCompress(data);
  ASSERT_TRUE(gz.ok()) << gz.status();
  ASSERT_EQ(static_cast<unsigned char>((*gz)[0]), 0x1f);
  auto back = Gunzip(*gz);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, data);
}

TEST(GzipTest, RoundTripsEmptyPayload) {
  auto gz = GzipCompress("");
  ASSERT_TRUE(gz.ok());
  auto back = Gunzip(*gz);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, "");
}

TEST(GzipTest, ConcatenatedMembers) {
  std::string a = *GzipCompress("hello "), b = *GzipCompress("world");
  auto back = Gunzip(a + b);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, "hello world");
  auto single = Gunzip(a + b, {.max_output = 100, .allow_multiple_members = false});
  EXPECT_EQ(single.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GzipTest, TruncatedIsDataLoss) {
  std::string gz = *GzipCompress(Pattern(5000));
  for (size_t cut : {size_t{1}, size_t{10}, gz.size() / 2, gz.size() - 1}) {
    auto r = Gunzip(gz.substr(0, cut));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << cut << " " << r.status();
  }
  EXPECT_EQ(Gunzip("").status().code(), absl::StatusCode::kDataLoss);
}

TEST(GzipTest, CorruptCrcIsDataLoss) {
  std::string gz = *GzipCompress(Pattern(5000));
  gz[gz.size() - 6] ^= 1;  // inside the CRC32 trailer
  EXPECT_EQ(Gunzip(gz).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Gunzip("not gzip at all").status().code(), absl::StatusCode::kDataLoss);
}

TEST(GzipTest, BombIsResourceExhausted) {
  std::string zeros(50 << 20, '\0');
  std::string gz = *GzipCompress(zeros, 1);
  ASSERT_LT(gz.size(), 1u << 20);
  auto r = Gunzip(gz, {.max_output = 1 << 20});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  auto exact = Gunzip(*GzipCompress(std::string(1000, 'x')), {.max_output = 1000});
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->size(), 1000u);
  auto over = Gunzip(*GzipCompress(std::string(1001, 'x')), {.max_output = 1000});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ZstdTest, RoundTripAndMultiFrameAndSkippable) {
  std::string data = Pattern(300000);
  auto z = ZstdCompress(data);
  ASSERT_TRUE(z.ok()) << z.status();
  auto back = ZstdDecompress(*z);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, data);
  std::string multi = *ZstdCompress("abc") + *ZstdSkippableFrame("meta") + *ZstdCompress("def");
  auto m = ZstdDecompress(multi);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, "abcdef");
  std::string skip = *ZstdSkippableFrame("xyz");
  EXPECT_EQ(skip, std::string("\x50\x2a\x4d\x18\x03\x00\x00\x00xyz", 11));
}

TEST(ZstdTest, ErrorsAreClear) {
  std::string z = *ZstdCompress(Pattern(5000));
  EXPECT_EQ(ZstdDecompress(z.substr(0, z.size() - 3)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ZstdDecompress("garbage!").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ZstdDecompress("").status().code(), absl::StatusCode::kDataLoss);
  std::string bomb = *ZstdCompress(std::string(50 << 20, '\0'), 1);
  EXPECT_EQ(ZstdDecompress(bomb, {.max_output = 1 << 20}).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto exact = ZstdDecompress(*ZstdCompress(std::string(1000, 'x')), {.max_output = 1000});
  ASSERT_TRUE(exact.ok()) << exact.status();
}

// A zstd frame whose header declares 16 GiB of content but holds 100 bytes: the declared size
// is not trusted for allocation (the decoder grows with what the frame produces) and the lie
// is DataLoss, both one-shot and streaming.
std::string FrameDeclaring(uint64_t declared, const std::string& content) {
  std::string f = "\x28\xb5\x2f\xfd";
  f.push_back(static_cast<char>(0xC0));  // 8-byte Frame_Content_Size, no single segment
  f.push_back(static_cast<char>(0x00));  // window descriptor: 1 KiB
  for (int i = 0; i < 8; ++i) f.push_back(static_cast<char>((declared >> (8 * i)) & 0xff));
  const uint32_t block =
      1u | (0u << 1) | (static_cast<uint32_t>(content.size()) << 3);  // last, raw
  f.push_back(static_cast<char>(block & 0xff));
  f.push_back(static_cast<char>((block >> 8) & 0xff));
  f.push_back(static_cast<char>((block >> 16) & 0xff));
  return f + content;
}

TEST(ZstdTest, DeclaredContentSizeIsNotTrusted) {
  const std::string content(100, 'z');
  ASSERT_TRUE(ZstdDecompress(FrameDeclaring(100, content)).ok());  // the crafted frame is valid
  auto lie = ZstdDecompress(FrameDeclaring(16ull << 30, content), {.max_output = 64ull << 30});
  EXPECT_EQ(lie.status().code(), absl::StatusCode::kDataLoss) << lie.status();
  auto decoder = StreamDecoder::NewZstdFrame();
  uint64_t produced = 0;
  absl::Status st = decoder->Feed(FrameDeclaring(16ull << 30, content), [&](std::string_view p) {
    produced += p.size();
    return absl::OkStatus();
  });
  EXPECT_FALSE(st.ok() && decoder->ended());
  EXPECT_LE(produced, content.size());
}

TEST(StreamDecoderTest, GzipAndZstdInPiecesMatchOneShot) {
  std::string data;
  for (int i = 0; i < 3 << 20; ++i) data.push_back(static_cast<char>((i * 7 + i / 1000) % 253));
  for (bool gzip : {true, false}) {
    std::string compressed = gzip ? *GzipCompress(data, 1) : *ZstdCompress(data, 1);
    auto decoder = gzip ? StreamDecoder::NewGzipMember() : StreamDecoder::NewZstdFrame();
    std::string out;
    for (size_t pos = 0; pos < compressed.size(); pos += 777) {
      ASSERT_TRUE(decoder
                      ->Feed(std::string_view(compressed).substr(pos, 777),
                             [&](std::string_view p) {
                               EXPECT_LE(p.size(), StreamDecoder::kPieceBytes);
                               out.append(p);
                               return absl::OkStatus();
                             })
                      .ok());
    }
    EXPECT_TRUE(decoder->ended());
    EXPECT_TRUE(out == data) << (gzip ? "gzip" : "zstd");
    // Corruption is DataLoss.
    std::string bad = compressed;
    bad[bad.size() / 2] ^= 0x55;
    auto d2 = gzip ? StreamDecoder::NewGzipMember() : StreamDecoder::NewZstdFrame();
    absl::Status st = d2->Feed(bad, [](std::string_view) { return absl::OkStatus(); });
    EXPECT_TRUE(!st.ok() || !d2->ended()) << (gzip ? "gzip" : "zstd");
  }
}

}  // namespace
}  // namespace lazypull::codec
