// Interoperability: layers written by the reference tools must be read by our readers, every
// file's metadata and bytes matching the source tree.
//   - eStargz: a small Go program built against Debian's stargz-snapshotter estargz package;
//   - zstd:chunked: Debian's skopeo 1.9 (`--dest-compress-format zstd:chunked`), which writes
//     the legacy variant.
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/format_detector.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/format/test_blob_builder.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::format {
namespace {

using lazypull::testing::RunShell;
using lazypull::testing::TempDir;

std::string Sh(const std::string& script) {
  auto r = RunShell(script, std::chrono::seconds(240));
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return "";
  EXPECT_EQ(r->exit_code, 0) << script << "\n" << r->output;
  return r->output;
}

// Builds a source tree with every entry type the formats carry.
void MakeRootfs(const std::string& root) {
  std::string script = fmt::format(R"SH(set -e
cd {0}
mkdir -p etc usr/bin usr/lib "dir with space/ünïcödé" deep
head -c 3000000 /dev/urandom > usr/lib/big.bin
head -c 70000 /dev/urandom > usr/bin/tool
printf 'root:x:0:0::/root:/bin/sh\n' > etc/passwd
: > etc/empty
ln usr/bin/tool usr/bin/tool-hardlink
ln -s ../lib/big.bin usr/bin/biglink
ln -s /etc/passwd etc/abs-link
mkfifo usr/fifo
mknod usr/null c 1 3
mknod usr/loop0 b 7 0
printf 'hi' > "dir with space/ünïcödé/fïle"
python3 -c "import os; os.setxattr('etc/passwd','user.note',b'hello'); os.setxattr('usr/bin','user.dirnote',b'd')"
long=deep/$(printf 'a%.0s' $(seq 1 90))/$(printf 'b%.0s' $(seq 1 90))
mkdir -p $long && printf 'long' > $long/$(printf 'c%.0s' $(seq 1 120))
dd if=/dev/zero of=usr/lib/sparse bs=1 count=0 seek=2000000 2>/dev/null
printf 'end' >> usr/lib/sparse
for i in $(seq 1 300); do printf "file $i\n" > etc/f$i; done
chown 1234:5678 etc/f1
chmod 4755 usr/bin/tool
chmod 0600 etc/f2
touch -d '2021-02-03 04:05:06.123456789' etc/f3

)SH",
                                   root);
  Sh(script);
}

struct Expected {
  struct stat st;
  std::string link;
  std::map<std::string, std::string> xattrs;
};

std::map<std::string, Expected>* g_tree;
std::string* g_root;

int Visit(const char* path, const struct stat* st, int, struct FTW*) {
  std::string rel = std::string(path).substr(g_root->size());
  if (!rel.empty() && rel[0] == '/') rel = rel.substr(1);
  Expected e;
  e.st = *st;
  if (S_ISLNK(st->st_mode)) {
    char buf[4096];
    ssize_t n = readlink(path, buf, sizeof(buf));
    e.link.assign(buf, n > 0 ? n : 0);
  } else {
    char names[4096];
    ssize_t n = llistxattr(path, names, sizeof(names));
    for (ssize_t i = 0; i < n; i += strlen(names + i) + 1) {
      std::string name(names + i);
      if (name.rfind("user.", 0) != 0) continue;
      char val[4096];
      ssize_t v = lgetxattr(path, name.c_str(), val, sizeof(val));
      e.xattrs[name] = std::string(val, v > 0 ? v : 0);
    }
  }
  (*g_tree)[rel] = e;
  return 0;
}

std::map<std::string, Expected> Walk(const std::string& root) {
  std::map<std::string, Expected> tree;
  std::string r = root;
  g_tree = &tree;
  g_root = &r;
  nftw(root.c_str(), Visit, 64, FTW_PHYS);
  return tree;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Compares the index with the source tree; `nanos` whether mtimes carry nanoseconds.
void CompareTree(const LayerIndex& index, BlobReader& blob, const std::string& root, bool nanos) {
  auto tree = Walk(root);
  size_t checked = 0;
  for (const auto& [rel, e] : tree) {
    SCOPED_TRACE(rel);
    auto ino = index.LookupPath(rel);
    ASSERT_TRUE(ino) << "missing in index";
    auto a = index.GetAttr(*ino);
    EXPECT_EQ(a->mode & S_IFMT, e.st.st_mode & S_IFMT);
    if (!rel.empty()) {  // the root's entry is not always in the TOC
      EXPECT_EQ(a->mode & 07777, e.st.st_mode & 07777);
      EXPECT_EQ(a->uid, e.st.st_uid);
      EXPECT_EQ(a->gid, e.st.st_gid);
      if (!S_ISDIR(e.st.st_mode)) {
        if (nanos) {
          EXPECT_EQ(a->mtime_sec, e.st.st_mtim.tv_sec);
          EXPECT_EQ(a->mtime_nsec, e.st.st_mtim.tv_nsec);
        } else {
          // The reference estargz writer rounds mtimes to whole seconds (Go's archive/tar
          // rounds when it re-encodes headers), and its TOC records that value.
          EXPECT_EQ(a->mtime_sec, e.st.st_mtim.tv_sec + (e.st.st_mtim.tv_nsec >= 500000000));
        }
      }
    }
    if (S_ISREG(e.st.st_mode)) {
      EXPECT_EQ(a->size, static_cast<uint64_t>(e.st.st_size));
      EXPECT_EQ(a->nlink, e.st.st_nlink);
      auto bytes = testing::ReadFileBytes(index, blob, *ino);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      EXPECT_TRUE(*bytes == ReadWhole(root + "/" + rel)) << "content differs";
    }
    if (S_ISLNK(e.st.st_mode)) {
      EXPECT_EQ(index.SymlinkTarget(*ino), e.link);
    }
    if (S_ISCHR(e.st.st_mode) || S_ISBLK(e.st.st_mode)) {
      EXPECT_EQ(a->dev_major, major(e.st.st_rdev));
      EXPECT_EQ(a->dev_minor, minor(e.st.st_rdev));
    }
    if (S_ISDIR(e.st.st_mode)) {
      size_t children = 0;
      for (const auto& [other, oe] : tree) {
        size_t slash = other.rfind('/');
        std::string parent = slash == std::string::npos ? "" : other.substr(0, slash);
        if (!other.empty() && parent == rel) ++children;
      }
      EXPECT_EQ(index.ChildCount(*ino), children);
    }
    for (const auto& [k, v] : e.xattrs) {
      auto got = index.GetXattr(*ino, k);
      ASSERT_TRUE(got) << k;
      EXPECT_EQ(*got, v);
    }
    ++checked;
  }
  EXPECT_GT(checked, 300u);
}

class InteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Sub("rootfs");
    mkdir(root_.c_str(), 0755);
    MakeRootfs(root_);
    Sh(fmt::format("cd {} && tar --xattrs --format=pax -cf {}/layer.tar .", root_, dir_.path()));
  }
  // Builds tests/format/estargz_gen against Debian's stargz-snapshotter Go sources.
  void BuildGenerator() {
    std::string gen_src = lazypull::testing::SourceDir() + "/tests/format/estargz_gen";
    Sh(
        fmt::format("mkdir -p {0}/src/estargz_gen && cp {1}/main.go {0}/src/estargz_gen/ && cd "
                    "{0}/src/estargz_gen && GO111MODULE=off GOPATH={0}:/usr/share/gocode "
                    "GOCACHE={2}/go-cache GOFLAGS= go build -o {3}/estargz_gen .",
                    dir_.Sub("gopath"), gen_src, lazypull::testing::BinaryDir(), dir_.path()));
  }
  TempDir dir_{"lazypull-format-interop"};
  std::string root_;
};

TEST_F(InteropTest, ReadsEstargzFromReferenceGoImplementation) {
  BuildGenerator();
  std::string out =
      Sh(fmt::format("{0}/estargz_gen {0}/layer.tar {0}/layer.estargz 200000 "
                     "./etc/passwd",
                     dir_.path()));
  auto toc_digest = Digest::Parse(out.substr(0, out.find(' ')));
  ASSERT_TRUE(toc_digest.ok()) << out;
  auto blob = NewFileBlobReader(dir_.Sub("layer.estargz"));
  ASSERT_TRUE(blob.ok());
  auto index = ReadEstargzIndex(**blob, *toc_digest);
  ASSERT_TRUE(index.ok()) << index.status();
  // The prioritized file lies inside the prefetch range.
  ASSERT_TRUE(index->prefetch_range());
  const Chunk& c = index->Chunks(*index->LookupPath("etc/passwd"))[0];
  EXPECT_LE(c.compressed_offset + c.compressed_length, index->prefetch_range()->end());
  EXPECT_FALSE(index->LookupPath(".prefetch.landmark"));
  EXPECT_GT(index->Chunks(*index->LookupPath("usr/lib/big.bin")).size(), 10u);
  CompareTree(*index, **blob, root_, /*nanos=*/false);
  // Detection from the descriptor as containerd passes it.
  std::map<std::string, std::string> ann = {
      {std::string(kEstargzTocDigestAnnotation), toc_digest->ToString()}};
  auto opened = OpenLayerIndex(**blob, "application/vnd.oci.image.layer.v1.tar+gzip", ann);
  ASSERT_TRUE(opened.ok()) << opened.status();
}

TEST_F(InteropTest, ReadsZstdChunkedFromStargzSnapshotter) {
  // stargz-snapshotter's own zstd:chunked: an eStargz TOC in zstd frames, legacy footer.
  BuildGenerator();
  std::string out =
      Sh(fmt::format("{0}/estargz_gen {0}/layer.tar {0}/layer.zstdchunked 200000 "
                     "./etc/passwd zstd",
                     dir_.path()));
  std::string json = out.substr(out.find('\n') + 1);
  auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(parsed.is_object()) << out;
  std::map<std::string, std::string> ann = parsed;
  ASSERT_TRUE(ann.count(std::string(kLegacyZstdChunkedManifestPositionKey))) << out;
  auto blob = NewFileBlobReader(dir_.Sub("layer.zstdchunked"));
  ASSERT_TRUE(blob.ok());
  auto index = OpenLayerIndex(**blob, "application/vnd.oci.image.layer.v1.tar+zstd", ann);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->format(), LayerFormat::kZstdChunked);
  ASSERT_TRUE(index->prefetch_range());
  EXPECT_FALSE(index->LookupPath(".prefetch.landmark"));
  CompareTree(*index, **blob, root_, /*nanos=*/false);
}

TEST_F(InteropTest, ReadsZstdChunkedFromSkopeo) {
  // An OCI layout with the uncompressed layer, then skopeo recompresses it to zstd:chunked.
  std::string layout = dir_.Sub("src");
  Sh(fmt::format(R"SH(set -e
cd {0} && mkdir -p src/blobs/sha256
put() {{ d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" src/blobs/sha256/$d; echo $d; }}
L=$(put layer.tar); LS=$(stat -c %s layer.tar)
printf '{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}},"config":{{}}}}' $L > config.json
C=$(put config.json); CS=$(stat -c %s config.json)
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $C $CS $L $LS > manifest.json
M=$(put manifest.json); MS=$(stat -c %s manifest.json)
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}' $M $MS > src/index.json
printf '{{"imageLayoutVersion":"1.0.0"}}' > src/oci-layout
skopeo copy --quiet --dest-compress-format zstd:chunked --dest-compress oci:src:t oci:dst:t

)SH",
                 dir_.path()));
  auto index_json = nlohmann::json::parse(ReadWhole(dir_.Sub("dst/index.json")));
  std::string mdigest = index_json["manifests"][0]["digest"];
  auto manifest =
      nlohmann::json::parse(ReadWhole(dir_.Sub("dst/blobs/sha256/" + mdigest.substr(7))));
  auto layer = manifest["layers"][0];
  ASSERT_EQ(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd") << layer.dump();
  std::map<std::string, std::string> ann = layer["annotations"];
  // skopeo 1.9 writes the legacy variant.
  ASSERT_TRUE(ann.count(std::string(kLegacyZstdChunkedManifestPositionKey))) << layer.dump();
  std::string ldigest = layer["digest"];
  auto blob = NewFileBlobReader(dir_.Sub("dst/blobs/sha256/" + ldigest.substr(7)));
  ASSERT_TRUE(blob.ok());
  auto index = ReadZstdChunkedIndex(**blob, ann);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_GT(index->Chunks(*index->LookupPath("usr/lib/big.bin")).size(), 5u);
  CompareTree(*index, **blob, root_, /*nanos=*/true);
  // The footer alone locates the manifest too (checksum from the annotation).
  std::map<std::string, std::string> only_checksum = {
      {std::string(kLegacyZstdChunkedManifestChecksumKey),
       ann[std::string(kLegacyZstdChunkedManifestChecksumKey)]}};
  auto from_footer = ReadZstdChunkedIndex(**blob, only_checksum);
  ASSERT_TRUE(from_footer.ok()) << from_footer.status();
  EXPECT_EQ(from_footer->inode_count(), index->inode_count());
  auto opened = OpenLayerIndex(**blob, layer["mediaType"].get<std::string>(), ann);
  ASSERT_TRUE(opened.ok()) << opened.status();
}

}  // namespace
}  // namespace lazypull::format
