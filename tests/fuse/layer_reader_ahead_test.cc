// LayerReader::FetchAhead and the FileStartObserver hook (startup prefetch, issue 18).
#include <mutex>
#include <string>
#include <vector>

#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "tests/fuse/test_layer.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::TempDir;
using ::lazypull::testing::WaitUntil;

LayerReaderOptions QuietOptions() {
  LayerReaderOptions o;
  o.background_fetch = false;
  o.prefetch = false;
  o.readahead_window = 0;
  o.readahead_bytes = 0;
  o.directory_batch.small_file = 0;
  return o;
}

TEST(LayerReaderAheadTest, FetchAheadFetchesOnceAndReadsJoinIt) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(6, 3000);
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), QuietOptions());
  ASSERT_TRUE(r.ok());
  // Files 1 and 4 whole, and the second half of file 2: three chunks, one request.
  std::vector<LayerReader::FileExtent> extents = {
      {InoOf(l, 1), 0, 3000}, {InoOf(l, 4), 0, 1u << 20}, {InoOf(l, 2), 1500, 1500}};
  EXPECT_EQ((*r)->FetchAhead(extents), 3u);
  EXPECT_EQ((*r)->FetchAhead(extents), 0u);  // in flight or local: nothing new
  std::string buf(3000, 'x');
  for (int i : {1, 2, 4}) {
    auto n = (*r)->Read(InoOf(l, i), 0, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(buf, l.contents[i]) << i;
  }
  EXPECT_EQ(l.blob->requests(), 1u);
  LayerReaderStats st = (*r)->Stats();
  EXPECT_EQ(st.ahead_chunks, 3u);
  EXPECT_EQ(st.ahead_used, 3u);
  EXPECT_EQ(st.demand_fetches, 0u);
  // Not asked for ahead: the read's own miss.
  ASSERT_TRUE((*r)->Read(InoOf(l, 3), 0, buf.data(), buf.size()).ok());
  EXPECT_EQ((*r)->Stats().demand_fetches, 1u);
  EXPECT_EQ(l.blob->requests(), 2u);
  // Local chunks are never fetched ahead again; nor is anything once the reader stopped.
  ASSERT_TRUE(
      WaitUntil([&] { return cache->Contains(l.index->Chunks(InoOf(l, 3))[0].digest_value()); }));
  EXPECT_EQ((*r)->FetchAhead(std::vector<LayerReader::FileExtent>{{InoOf(l, 3), 0, 3000}}), 0u);
  (*r)->Stop();
  EXPECT_EQ((*r)->FetchAhead(std::vector<LayerReader::FileExtent>{{InoOf(l, 5), 0, 3000}}), 0u);
  EXPECT_EQ(l.blob->requests(), 2u);
}

class RecordingObserver : public FileStartObserver {
 public:
  void OnFileStart(const std::string& layer_id, format::Ino ino, std::string_view head) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls.push_back({layer_id, ino, std::string(head)});
  }
  struct Call {
    std::string layer_id;
    format::Ino ino;
    std::string head;
  };
  std::vector<Call> Calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls;
  }

 private:
  std::mutex mu_;
  std::vector<Call> calls;
};

TEST(LayerReaderAheadTest, ObserverHearsOfReadsFromAFilesStart) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(2, 3000);
  auto observer = std::make_shared<RecordingObserver>();
  LayerReaderOptions o = QuietOptions();
  o.file_start_observer = observer;
  auto r = LayerReader::Create("layer-a", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(100, 'x');
  ASSERT_TRUE((*r)->Read(InoOf(l, 0), 100, buf.data(), buf.size()).ok());  // not the start
  EXPECT_TRUE(observer->Calls().empty());
  ASSERT_TRUE((*r)->Read(InoOf(l, 0), 0, buf.data(), buf.size()).ok());
  ASSERT_EQ(observer->Calls().size(), 1u);
  EXPECT_EQ(observer->Calls()[0].layer_id, "layer-a");
  EXPECT_EQ(observer->Calls()[0].ino, InoOf(l, 0));
  EXPECT_EQ(observer->Calls()[0].head, l.contents[0].substr(0, 100));
  // A zero-copy read from the cache: told without the bytes.
  ASSERT_TRUE(
      WaitUntil([&] { return cache->Contains(l.index->Chunks(InoOf(l, 0))[0].digest_value()); }));
  std::vector<LayerReader::Span> spans;
  ASSERT_TRUE((*r)->ReadSpans(InoOf(l, 0), 0, 100, &spans));
  ASSERT_EQ(observer->Calls().size(), 2u);
  EXPECT_EQ(observer->Calls()[1].head, "");
  // Past EOF: nothing was read, nothing is told.
  ASSERT_TRUE((*r)->Read(InoOf(l, 1), 5000, buf.data(), buf.size()).ok());
  EXPECT_EQ(observer->Calls().size(), 2u);
}

}  // namespace
}  // namespace lazypull
