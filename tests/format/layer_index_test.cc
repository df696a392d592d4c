#include "fetcher/format/layer_index.h"

#include <sys/stat.h>

#include "fetcher/format/layer_index_builder.h"
#include "gtest/gtest.h"

namespace lazypull::format {
namespace {

EntryMeta Meta(uint32_t perm = 0644) {
  EntryMeta m;
  m.permissions = perm;
  m.uid = 1000;
  m.gid = 100;
  m.mtime_sec = 1700000000;
  m.mtime_nsec = 123456789;
  return m;
}

Chunk MakeChunk(uint64_t coff, uint64_t clen, uint64_t foff, uint64_t len) {
  Chunk c;
  c.compression = ChunkCompression::kZstdFrame;
  c.compressed_offset = coff;
  c.compressed_length = clen;
  c.file_offset = foff;
  c.length = len;
  c.has_digest = true;
  // A digest of its own (one digest names one content of one length).
  for (int i = 0; i < 8; ++i) {
    c.digest[i] = static_cast<uint8_t>(coff >> (8 * i));
    c.digest[8 + i] = static_cast<uint8_t>(foff >> (8 * i));
  }
  return c;
}

TEST(LayerIndexTest, TreeInodesLinksAndAttributes) {
  LayerIndexBuilder b(LayerFormat::kZstdChunked, {});
  ASSERT_TRUE(b.AddDirectory("./", Meta(0755)).ok());
  ASSERT_TRUE(b.AddDirectory("./etc/", Meta(0700)).ok());
  ASSERT_TRUE(b.AddRegular("./etc/passwd", Meta(), 10, {MakeChunk(100, 20, 0, 10)}).ok());
  // Implicit parents usr/ and usr/bin/.
  ASSERT_TRUE(b.AddRegular("usr/bin/tool", Meta(04755), 30,
                           {MakeChunk(120, 10, 0, 16), MakeChunk(130, 10, 16, 14)})
                  .ok());
  ASSERT_TRUE(b.AddHardlink("usr/bin/tool2", "./usr/bin/tool").ok());
  ASSERT_TRUE(b.AddSymlink("usr/bin/sh", Meta(0777), "/bin/busybox").ok());
  ASSERT_TRUE(b.AddDevice("dev/null", Meta(0666), S_IFCHR, 1, 3).ok());
  ASSERT_TRUE(b.AddDevice("dev/sda", Meta(0660), S_IFBLK, 8, 0).ok());
  ASSERT_TRUE(b.AddFifo("run/fifo", Meta()).ok());
  auto index = b.Finish(Digest::Of("toc"), 1000, 500);
  ASSERT_TRUE(index.ok()) << index.status();

  auto root = index->GetAttr(kRootIno);
  ASSERT_TRUE(root);
  EXPECT_EQ(root->mode, S_IFDIR | 0755u);
  EXPECT_EQ(root->nlink, 2u + 4u);  // etc, usr, dev, run
  ASSERT_EQ(index->ChildCount(kRootIno), 4u);
  EXPECT_EQ(index->Child(kRootIno, 0).name, "dev");
  EXPECT_EQ(index->Child(kRootIno, 1).name, "etc");
  EXPECT_EQ(index->Child(kRootIno, 2).name, "run");
  EXPECT_EQ(index->Child(kRootIno, 3).name, "usr");

  auto tool = index->LookupPath("usr/bin/tool");
  auto tool2 = index->LookupPath("usr/bin/tool2");
  ASSERT_TRUE(tool && tool2);
  EXPECT_EQ(*tool, *tool2);
  auto a = index->GetAttr(*tool);
  EXPECT_EQ(a->mode, S_IFREG | 04755u);
  EXPECT_EQ(a->nlink, 2u);
  EXPECT_EQ(a->size, 30u);
  EXPECT_EQ(a->uid, 1000u);
  EXPECT_EQ(a->gid, 100u);
  EXPECT_EQ(a->mtime_sec, 1700000000);
  EXPECT_EQ(a->mtime_nsec, 123456789u);
  EXPECT_EQ(index->Chunks(*tool).size(), 2u);
  EXPECT_EQ(index->ChunksInRange(*tool, 15, 2).size(), 2u);
  EXPECT_EQ(index->ChunksInRange(*tool, 16, 100).size(), 1u);
  EXPECT_EQ(index->ChunksInRange(*tool, 0, 16).size(), 1u);
  EXPECT_EQ(index->ChunksInRange(*tool, 30, 1).size(), 0u);

  auto usr_bin = index->LookupPath("usr/bin");
  EXPECT_EQ(index->GetAttr(*usr_bin)->mode, S_IFDIR | 0755u);  // implicit
  EXPECT_EQ(index->Parent(*usr_bin), *index->LookupPath("usr"));
  EXPECT_EQ(index->Path(*usr_bin), "usr/bin");
  EXPECT_EQ(index->GetAttr(*index->LookupPath("etc"))->mode, S_IFDIR | 0700u);

  auto sh = index->LookupPath("usr/bin/sh");
  EXPECT_EQ(index->SymlinkTarget(*sh), "/bin/busybox");
  EXPECT_EQ(index->GetAttr(*sh)->size, 12u);
  EXPECT_TRUE(S_ISLNK(index->GetAttr(*sh)->mode));
  auto null = index->GetAttr(*index->LookupPath("dev/null"));
  EXPECT_EQ(null->mode, S_IFCHR | 0666u);
  EXPECT_EQ(null->dev_major, 1u);
  EXPECT_EQ(null->dev_minor, 3u);
  EXPECT_EQ(index->GetAttr(*index->LookupPath("dev/sda"))->mode, S_IFBLK | 0660u);
  EXPECT_TRUE(S_ISFIFO(index->GetAttr(*index->LookupPath("run/fifo"))->mode));
  EXPECT_FALSE(index->LookupPath("nope"));
  EXPECT_FALSE(index->GetAttr(0));
  EXPECT_FALSE(index->GetAttr(index->inode_count() + 1));
  EXPECT_EQ(index->total_file_bytes(), 40u);
}

TEST(LayerIndexTest, WhiteoutsBecomeOverlayView) {
  LayerIndexBuilder b(LayerFormat::kEstargz, {});
  EntryMeta m = Meta();
  m.xattrs = {{"user.z", "1"}, {"security.capability", std::string("\x01\x00\x00\x02", 4)}};
  ASSERT_TRUE(b.AddDirectory("a", m).ok());
  ASSERT_TRUE(b.AddRegular("a/.wh..wh..opq", Meta(), 0, {}).ok());
  ASSERT_TRUE(b.AddRegular("a/.wh.gone", Meta(), 0, {}).ok());
  ASSERT_TRUE(b.AddRegular("b/.wh..wh..opq", Meta(), 0, {}).ok());  // implicit dir b
  ASSERT_TRUE(b.AddRegular(".wh..wh.plnk", Meta(), 0, {}).ok());    // aufs metadata: dropped
  auto index = b.Finish(Digest(), 10, 0);
  ASSERT_TRUE(index.ok()) << index.status();
  Ino a = *index->LookupPath("a");
  ASSERT_EQ(index->ChildCount(a), 1u);
  auto gone = index->GetAttr(*index->Lookup(a, "gone"));
  EXPECT_EQ(gone->mode, static_cast<uint32_t>(S_IFCHR));
  EXPECT_EQ(gone->dev_major, 0u);
  EXPECT_EQ(gone->dev_minor, 0u);
  EXPECT_EQ(gone->flags, kWhiteout);
  EXPECT_EQ(index->GetAttr(a)->flags, kOpaque);
  EXPECT_EQ(*index->GetXattr(a, "trusted.overlay.opaque"), "y");
  EXPECT_EQ(*index->GetXattr(a, "user.overlay.opaque"), "y");
  EXPECT_EQ(*index->GetXattr(a, "user.z"), "1");
  EXPECT_EQ(*index->GetXattr(a, "security.capability"), std::string("\x01\x00\x00\x02", 4));
  auto xs = index->Xattrs(a);
  ASSERT_EQ(xs.size(), 4u);
  EXPECT_EQ(xs[0].first, "security.capability");  // sorted
  EXPECT_EQ(*index->GetXattr(*index->LookupPath("b"), "trusted.overlay.opaque"), "y");
  EXPECT_EQ(index->ChildCount(kRootIno), 2u);
}

TEST(LayerIndexTest, RejectsBadPathsAndDuplicates) {
  struct Case {
    const char* path;
  };
  for (const char* bad : {"/etc/passwd", "a/../../etc", "..", "a/..", "x/.wh..", "x/.wh."}) {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    auto st = b.AddRegular(bad, Meta(), 0, {});
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad << " " << st;
  }
  {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    EXPECT_EQ(b.AddRegular(std::string("a\0b", 3), Meta(), 0, {}).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(b.AddRegular(std::string(256, 'x'), Meta(), 0, {}).code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    ASSERT_TRUE(b.AddRegular("a/f", Meta(), 0, {}).ok());
    EXPECT_EQ(b.AddRegular("./a/f", Meta(), 0, {}).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(b.AddDirectory("a/f", Meta()).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(b.AddRegular("a/f/g", Meta(), 0, {}).code(), absl::StatusCode::kInvalidArgument);
    // A directory entry after its implicit creation is fine, once.
    EXPECT_TRUE(b.AddDirectory("a/", Meta(0700)).ok());
    EXPECT_EQ(b.AddDirectory("a", Meta(0700)).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(LayerIndexTest, RejectsBadHardlinks) {
  {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    ASSERT_TRUE(b.AddHardlink("a", "missing").ok());
    auto st = b.Finish(Digest(), 10, 0).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("missing target"), std::string::npos) << st;
  }
  {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    ASSERT_TRUE(b.AddDirectory("d", Meta()).ok());
    ASSERT_TRUE(b.AddHardlink("a", "d").ok());
    EXPECT_EQ(b.Finish(Digest(), 10, 0).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    LayerIndexBuilder b(LayerFormat::kEstargz, {});
    ASSERT_TRUE(b.AddRegular("f", Meta(), 0, {}).ok());
    ASSERT_TRUE(b.AddHardlink("../escape", "f").ok());
    EXPECT_EQ(b.Finish(Digest(), 10, 0).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(LayerIndexTest, RejectsBadChunks) {
  auto build = [](std::vector<Chunk> chunks, uint64_t size, uint64_t data_end = 500,
                  IndexBuildOptions o = {}) {
    LayerIndexBuilder b(LayerFormat::kZstdChunked, o);
    absl::Status st = b.AddRegular("f", Meta(), size, std::move(chunks));
    if (!st.ok()) return st;
    return b.Finish(Digest(), 1000, data_end).status();
  };
  EXPECT_TRUE(build({MakeChunk(10, 10, 0, 5), MakeChunk(20, 10, 5, 5)}, 10).ok());
  // Gap, overlap, short, past size, zero length.
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 5), MakeChunk(20, 10, 6, 4)}, 10).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 5), MakeChunk(20, 10, 4, 6)}, 10).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 5)}, 10).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 11)}, 10).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 0), MakeChunk(20, 10, 0, 10)}, 10).code(),
            absl::StatusCode::kInvalidArgument);
  // Past the data area / blob, overlapping frames.
  EXPECT_EQ(build({MakeChunk(495, 10, 0, 10)}, 10).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 10)}, 10, 2000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(10, 10, 0, 5), MakeChunk(15, 10, 5, 5)}, 10).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build({MakeChunk(UINT64_MAX - 5, 10, 0, 10)}, 10).code(),
            absl::StatusCode::kInvalidArgument);
  // Missing digest: refused unless allowed.
  Chunk nodigest = MakeChunk(10, 10, 0, 10);
  nodigest.has_digest = false;
  auto st = build({nodigest}, 10);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("no digest"), std::string::npos);
  EXPECT_TRUE(build({nodigest}, 10, 500, IndexBuildOptions{.allow_missing_digests = true}).ok());
}

// A hostile TOC giving one digest two lengths: the reader shares fetches and cache entries by
// content, so the index must say one digest is one content of one length.
TEST(LayerIndexTest, RefusesOneDigestAtTwoLengths) {
  auto build = [](uint64_t second_length, IndexBuildOptions o = {}) {
    LayerIndexBuilder b(LayerFormat::kZstdChunked, o);
    Chunk small = MakeChunk(10, 10, 0, 4096);
    Chunk large = MakeChunk(20, 10, 0, second_length);
    small.digest.fill(0xab);
    large.digest.fill(0xab);
    EXPECT_TRUE(b.AddRegular("small", Meta(), 4096, {small}).ok());
    EXPECT_TRUE(b.AddRegular("large", Meta(), second_length, {large}).ok());
    return b.Finish(Digest(), 1000, 500).status();
  };
  absl::Status st = build(65536);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  std::string hex;
  for (int i = 0; i < 32; ++i) hex += "ab";
  EXPECT_EQ(st.message(), "layer entry \"large\": chunk at file offset 0 has digest sha256:" + hex +
                              " with length 65536, but another chunk has the same digest with "
                              "length 4096");
  // The same content twice (equal lengths) is ordinary deduplication.
  EXPECT_TRUE(build(4096).ok());
  EXPECT_TRUE(build(65536, IndexBuildOptions{.check_digest_lengths = false}).ok());
}

// innerOffset/length beyond what the member or frame can inflate to: refused before anything
// is decompressed.
TEST(LayerIndexTest, RefusesChunksLargerThanTheirCodecCanExpandTo) {
  auto build = [](LayerFormat format, ChunkCompression compression, uint64_t inner,
                  uint64_t length) {
    LayerIndexBuilder b(format, {});
    Chunk c = MakeChunk(10, 1000, 0, length);
    c.compression = compression;
    c.inner_offset = inner;
    absl::Status st = b.AddRegular("f", Meta(), length, {c});
    if (!st.ok()) return st;
    return b.Finish(Digest(), 2000, 2000).status();
  };
  const auto gz = ChunkCompression::kGzipMember;
  const auto zs = ChunkCompression::kZstdFrame;
  // 1000 compressed bytes: deflate holds at most 1032000 + slack, zstd 32768000 + slack.
  EXPECT_TRUE(build(LayerFormat::kEstargz, gz, 0, 1'000'000).ok());
  EXPECT_TRUE(build(LayerFormat::kEstargz, gz, 500'000, 500'000).ok());
  absl::Status st = build(LayerFormat::kEstargz, gz, uint64_t{1} << 62, 4096);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("more than it can expand to"), std::string::npos) << st;
  EXPECT_EQ(build(LayerFormat::kEstargz, gz, 0, 2'000'000).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(build(LayerFormat::kZstdChunked, zs, 0, 30'000'000).ok());
  EXPECT_EQ(build(LayerFormat::kZstdChunked, zs, 0, 40'000'000).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LayerIndexTest, EntryLimit) {
  LayerIndexBuilder b(LayerFormat::kEstargz, IndexBuildOptions{.max_entries = 3});
  ASSERT_TRUE(b.AddRegular("a", Meta(), 0, {}).ok());
  ASSERT_TRUE(b.AddRegular("b", Meta(), 0, {}).ok());
  ASSERT_TRUE(b.AddRegular("c", Meta(), 0, {}).ok());
  EXPECT_EQ(b.AddRegular("d", Meta(), 0, {}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::format
