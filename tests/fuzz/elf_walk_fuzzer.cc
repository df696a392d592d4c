// libFuzzer target: WalkDependencies (ResolvePath, LibraryResolver, the walk's bounds and
// loop detection) over an untrusted image tree.
// Input: records [kind][path length][payload length, 2 bytes LE][path][payload]; kind 'F' is
// a regular file (payload = its bytes), 'L' a symlink (payload = target); the first file is
// the executable. Oracle: the walk ends, stays within its bounds, lists each file once, and
// every object's loader comes before it one level up.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fetcher/elf/dependency_walk.h"
#include "fetcher/elf/file_tree.h"

namespace {

using namespace lazypull::elf;

class FuzzImage : public FileTree {
 public:
  absl::StatusOr<FileNode> Lstat(std::string_view p) const override {
    std::string path(p);
    if (path == "/" || dirs_.count(path)) return FileNode::Directory();
    if (auto f = files_.find(path); f != files_.end()) return FileNode::Regular(f->second.size());
    if (auto l = links_.find(path); l != links_.end()) return FileNode::Symlink(l->second);
    return absl::NotFoundError(path);
  }
  void Add(char kind, const std::string& path, std::string payload) {
    for (size_t i = path.find('/', 1); i != std::string::npos; i = path.find('/', i + 1)) {
      dirs_.insert(path.substr(0, i));
    }
    if (kind == 'L') {
      links_[path] = std::move(payload);
    } else {
      files_[path] = std::move(payload);
    }
  }
  const std::map<std::string, std::string>& files() const { return files_; }

 private:
  std::map<std::string, std::string> files_;
  std::map<std::string, std::string> links_;
  std::set<std::string> dirs_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzImage image;
  std::string exe;
  size_t pos = 0;
  for (int records = 0; records < 64 && pos + 4 <= size; ++records) {
    char kind = static_cast<char>(data[pos]);
    size_t path_len = data[pos + 1];
    size_t payload_len = data[pos + 2] | (size_t{data[pos + 3]} << 8);
    pos += 4;
    if (pos + path_len + payload_len > size) break;
    std::string path = "/" + std::string(reinterpret_cast<const char*>(data) + pos, path_len);
    std::string payload(reinterpret_cast<const char*>(data) + pos + path_len, payload_len);
    pos += path_len + payload_len;
    image.Add(kind == 'L' ? 'L' : 'F', path, std::move(payload));
    if (kind != 'L' && exe.empty()) exe = path;
  }
  if (exe.empty()) return 0;
  WalkOptions options;
  options.max_objects = 32;
  options.max_depth = 8;
  int calls = 0;
  BatchReader read = [&](std::span<const ReadRequest> reqs) {
    ++calls;
    std::vector<absl::StatusOr<std::string>> out;
    for (const ReadRequest& r : reqs) {
      auto f = image.files().find(r.path);
      if (f == image.files().end()) abort();  // the walk reads only regular files it found
      if (r.range.offset > f->second.size() || r.range.length > f->second.size() - r.range.offset) {
        abort();  // nor past their end
      }
      out.push_back(f->second.substr(r.range.offset, r.range.length));
    }
    return out;
  };
  auto walk = WalkDependencies(image, exe, read, options);
  if (!walk.ok()) return 0;
  if (walk->rounds != calls || walk->objects.size() > options.max_objects) abort();
  std::set<std::string> seen;
  for (size_t i = 0; i < walk->objects.size(); ++i) {
    const WalkObject& o = walk->objects[i];
    if (!seen.insert(o.real_path).second || !o.info.complete()) abort();
    if (i == 0) continue;
    if (o.loader < 0 || static_cast<size_t>(o.loader) >= i) abort();
    if (o.depth != walk->objects[o.loader].depth + 1 || o.depth > options.max_depth) abort();
  }
  // Each level costs a bounded number of rounds.
  if (walk->rounds > (options.max_depth + 1) * (options.max_rounds_per_object + 1) *
                         static_cast<int>(options.max_candidates + 1)) {
    abort();
  }
  return 0;
}
