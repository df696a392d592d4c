// LayerReader's background fetch behind a registry mirror that is filling itself with the
// blob (BlobReader::BulkReadsReadyAt, issue 21), without FUSE (label unit).
#include <chrono>
#include <string>

#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "tests/fuse/test_layer.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::TempDir;
using ::lazypull::testing::WaitUntil;

// Reads file i and checks its bytes.
void ExpectFile(LayerReader& r, const Layer& l, int i) {
  std::string buf(l.contents[i].size(), 'x');
  auto n = r.Read(InoOf(l, i), 0, buf.data(), buf.size());
  ASSERT_TRUE(n.ok()) << "file " << i << ": " << n.status();
  EXPECT_EQ(*n, buf.size());
  EXPECT_TRUE(buf == l.contents[i]) << "file " << i;
}

// Behind a mirror that is filling itself with the blob (BlobReader::BulkReadsReadyAt), the
// background fetch sends nothing (it would go to the upstream, once more per node) while
// on-demand reads still go out; once the source is ready, the layer completes, exact.
TEST(LayerReaderTest, BackgroundFetchWaitsWhileTheBlobsMirrorFills) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(30, 20000);
  LayerReaderOptions o;
  o.background_silence = std::chrono::milliseconds(50);
  o.prefetch = false;
  o.readahead_window = 0;
  o.readahead_bytes = 0;
  o.directory_batch.small_file = 0;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  l.blob->SetFilling(true);
  (*r)->StartBackground();
  ASSERT_TRUE(WaitUntil([&] { return l.blob->filling_answers() >= 3; }));
  EXPECT_EQ((*r)->Stats().background, "mirror_filling");
  EXPECT_EQ(l.blob->requests(), 0u);
  ExpectFile(**r, l, 4);  // an on-demand read does not wait
  EXPECT_EQ(l.blob->requests(), 1u);
  EXPECT_FALSE((*r)->WaitBackground(std::chrono::milliseconds(0)));
  l.blob->SetFilling(false);
  ASSERT_TRUE((*r)->WaitBackground(std::chrono::seconds(60)));
  LayerReaderStats s = (*r)->Stats();
  EXPECT_EQ(s.background, "done");
  EXPECT_EQ(s.local_chunks, s.total_chunks);
  for (int i = 0; i < 30; ++i) ExpectFile(**r, l, i);
}

}  // namespace
}  // namespace lazypull
