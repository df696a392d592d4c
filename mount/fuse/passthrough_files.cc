#include "mount/fuse/passthrough_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "base/logging.h"
#include "fmt/format.h"
#include "mount/fuse/fuse_passthrough_abi.h"

namespace lazypull::mount {
namespace {

namespace fs = std::filesystem;

// File handle modes (low 2 bits; the rest is the instance nonce).
constexpr uint64_t kCached = 1;
constexpr uint64_t kPassthrough = 2;
constexpr uint64_t kUntracked = 3;  // an inode whose mode a predecessor fixed

uint64_t NewNonce() {
  std::random_device rd;
  return ((static_cast<uint64_t>(rd()) << 32) | rd()) >> 2;
}

// Copies `len` bytes at `in_off` of `in` to `out` at `out_off` (in the kernel).
absl::Status CopyRange(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len) {
  loff_t i = static_cast<loff_t>(in_off), o = static_cast<loff_t>(out_off);
  while (len > 0) {
    const ssize_t n = ::copy_file_range(in, &i, out, &o, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          fmt::format("copy_file_range: {}", n == 0 ? "short source" : strerror(errno)));
    }
    len -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

PassthroughFiles::PassthroughFiles(LayerReader* reader, std::string dir, std::string name)
    : reader_(reader), dir_(std::move(dir)), name_(std::move(name)), nonce_(NewNonce()) {}

PassthroughFiles::~PassthroughFiles() {
  StopCopier();
  ReleaseCharges(/*drop_copies=*/true);
}

absl::StatusOr<std::unique_ptr<PassthroughFiles>> PassthroughFiles::Create(LayerReader* reader,
                                                                           std::string dir,
                                                                           bool adopted,
                                                                           std::string name) {
  std::unique_ptr<PassthroughFiles> p(
      new PassthroughFiles(reader, std::move(dir), std::move(name)));
  std::error_code ec;
  if (!adopted) fs::remove_all(p->dir_, ec);  // a previous mount's leftovers
  fs::create_directories(p->dir_ + "/files", ec);
  if (ec) {
    return absl::InternalError(fmt::format("creating {}/files: {}", p->dir_, ec.message()));
  }
  ::chmod(p->dir_.c_str(), 0700);
  if (adopted) {
    if (absl::Status s = p->LoadLedger(); !s.ok()) return s;
    p->AdoptCopies();
  }
  const std::string ledger = p->dir_ + "/ledger";
  p->ledger_.Reset(::open(ledger.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!p->ledger_.valid()) {
    return absl::InternalError(fmt::format("opening {}: {}", ledger, strerror(errno)));
  }
  return p;
}

absl::Status PassthroughFiles::LoadLedger() {
  const std::string path = dir_ + "/ledger";
  std::ifstream in(path);
  if (!in) return absl::OkStatus();  // the predecessor never used passthrough
  // The last complete record of each inode (a crash may have cut the last line).
  std::unordered_map<format::Ino, std::pair<char, int32_t>> last;
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // no newline: cut short
    std::istringstream ls(line);
    char kind = 0;
    uint64_t ino = 0;
    int64_t id = 0;
    ls >> kind >> ino;
    if (!ls || (kind != 'C' && kind != 'P' && kind != 'E')) continue;
    if (kind == 'P' && !(ls >> id)) continue;
    last[ino] = {kind, static_cast<int32_t>(id)};
  }
  size_t cached = 0, passthrough = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [ino, rec] : last) {
    if (rec.first == 'E') continue;
    auto node = std::make_unique<Node>();
    if (rec.first == 'C') {
      node->inherited_cached = true;
      ++cached;
    } else {
      node->inherited_passthrough = true;
      node->backing_id = rec.second;
      ++passthrough;
    }
    nodes_[ino] = std::move(node);
  }
  LogInfo("FUSE passthrough: io modes inherited from the previous daemon",
          {{"name", name_}, {"cached", cached}, {"passthrough", passthrough}});
  return absl::OkStatus();
}

void PassthroughFiles::AdoptCopies() {
  std::error_code ec;
  size_t kept = 0, removed = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_ + "/files", ec)) {
    const std::string name = e.path().filename().string();
    format::Ino ino = 0;
    const bool numeric = !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
    if (numeric) ino = std::stoull(name);
    Node* node = numeric ? FindNode(ino) : nullptr;
    std::error_code rec;
    if (node != nullptr && node->inherited_passthrough) {
      // The kernel may read it through the inherited backing id for as long as it likes.
      const uint64_t bytes = CopyBytes(ino);
      reader_->cache()->SetExternalBytes(CopyPath(ino), bytes);
      std::lock_guard<std::mutex> nl(node->mu);
      node->charged = true;
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.copies;
      stats_.copy_bytes += bytes;
      ++kept;
    } else if (fs::remove(e.path(), rec); !rec) {
      ++removed;  // not verified in this process; assembled again when needed
    }
  }
  LogInfo("FUSE passthrough: copies of the previous daemon",
          {{"name", name_}, {"kept", kept}, {"removed", removed}});
}

void PassthroughFiles::Append(const std::string& line) {
  std::lock_guard<std::mutex> lock(ledger_mu_);
  if (::write(ledger_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    LogWarn("FUSE passthrough ledger write failed; a successor may fail opens of files open now",
            {{"name", name_}, {"error", strerror(errno)}});
  }
}

absl::Status PassthroughFiles::Probe() {
  const std::string path = dir_ + "/probe";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::InternalError(fmt::format("{}: {}", path, strerror(errno)));
  ::unlink(path.c_str());
  absl::StatusOr<int32_t> id = FuseBackingOpen(dev_fd_.load(), fd.get());
  if (!id.ok()) return id.status();
  if (absl::Status s = FuseBackingClose(dev_fd_.load(), *id); !s.ok()) return s;
  enabled_.store(true);
  return absl::OkStatus();
}

void PassthroughFiles::Disable() { enabled_.store(false); }

PassthroughFiles::Node& PassthroughFiles::NodeOf(format::Ino ino) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<Node>& n = nodes_[ino];
  if (n == nullptr) n = std::make_unique<Node>();
  return *n;
}

PassthroughFiles::Node* PassthroughFiles::FindNode(format::Ino ino) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.get();
}

std::string PassthroughFiles::CopyPath(format::Ino ino) const {
  return fmt::format("{}/files/{}", dir_, ino);
}

uint64_t PassthroughFiles::CopyBytes(format::Ino ino) const {
  uint64_t bytes = 0;
  for (const format::Chunk& c : reader_->index().Chunks(ino)) {
    if (c.compression != format::ChunkCompression::kZeros) bytes += c.length;
  }
  return bytes;
}

UniqueFd PassthroughFiles::BackingFd(format::Ino ino, Node& node) {
  auto defer = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.deferred_opens;
  };
  switch (node.copy) {
    case Node::Copy::kReady:
      return UniqueFd(::fcntl(node.copy_fd->get(), F_DUPFD_CLOEXEC, 0));
    case Node::Copy::kQueued:
      defer();
      return UniqueFd();
    case Node::Copy::kFailed:
      return UniqueFd();
    case Node::Copy::kNone:
      break;
  }
  std::optional<format::InodeAttr> attr = reader_->index().GetAttr(ino);
  if (!attr || (attr->mode & S_IFMT) != S_IFREG || attr->size == 0) return UniqueFd();
  std::vector<LayerReader::Span> spans;
  if (!reader_->LocalFileSpans(ino, &spans)) return UniqueFd();
  uint64_t total = 0;
  for (const LayerReader::Span& s : spans) total += s.length;
  if (total != attr->size) return UniqueFd();
  if (spans.size() == 1 && spans[0].file.has_value() && spans[0].file->size() == attr->size) {
    // The chunk-cache file is the file.
    return UniqueFd(::fcntl(spans[0].file->fd(), F_DUPFD_CLOEXEC, 0));
  }
  // A copy is needed: made off this open's path, which goes on in cached mode.
  if (Enqueue(ino)) {
    node.copy = Node::Copy::kQueued;
    defer();
  }
  return UniqueFd();
}

absl::Status PassthroughFiles::WriteCopy(format::Ino ino,
                                         const std::vector<LayerReader::Span>& spans,
                                         uint64_t size) {
  const std::string path = CopyPath(ino);
  const std::string tmp = path + ".tmp";
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400));
  absl::Status s = out.valid() ? absl::OkStatus()
                               : absl::InternalError(fmt::format("{}: {}", tmp, strerror(errno)));
  uint64_t pos = 0;
  for (const LayerReader::Span& span : spans) {
    if (!s.ok()) break;
    if (stop_.load()) s = absl::CancelledError("the mount is going away");
    if (s.ok() && span.file.has_value())
      s = CopyRange(span.file->fd(), span.offset, out.get(), pos, span.length);
    pos += span.length;
  }
  if (s.ok() && ::ftruncate(out.get(), static_cast<off_t>(size)) != 0) {
    s = absl::InternalError(fmt::format("ftruncate {}: {}", tmp, strerror(errno)));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::InternalError(fmt::format("rename {}: {}", tmp, strerror(errno)));
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

void PassthroughFiles::Assemble(format::Ino ino) {
  Node& node = NodeOf(ino);
  auto give_up = [&](Node::Copy state) {
    std::lock_guard<std::mutex> lock(node.mu);
    node.copy = state;
  };
  std::optional<format::InodeAttr> attr = reader_->index().GetAttr(ino);
  std::vector<LayerReader::Span> spans;
  if (!attr || !reader_->LocalFileSpans(ino, &spans)) return give_up(Node::Copy::kNone);
  uint64_t total = 0, bytes = 0;
  for (const LayerReader::Span& s : spans) {
    total += s.length;
    if (s.file.has_value()) bytes += s.length;
  }
  if (total != attr->size) return give_up(Node::Copy::kNone);
  ChunkCache* cache = reader_->cache();
  // The copy replaces these chunks: they go first when its charge needs room (the handles in
  // `spans` keep evicted ones readable until the copy is written).
  for (const format::Chunk& c : reader_->index().Chunks(ino)) {
    if (c.has_digest && c.compression != format::ChunkCompression::kZeros)
      cache->MakeColdest(c.digest_value());
  }
  const std::string key = CopyPath(ino);
  absl::Status s = cache->ReserveExternalBytes(key, bytes);
  if (s.ok()) {
    s = WriteCopy(ino, spans, attr->size);
    if (!s.ok()) cache->SetExternalBytes(key, 0);
  }
  UniqueFd fd;
  if (s.ok()) {
    fd.Reset(::open(key.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      s = absl::InternalError(fmt::format("{}: {}", key, strerror(errno)));
      ::unlink(key.c_str());
      cache->SetExternalBytes(key, 0);
    }
  }
  if (!s.ok()) {
    if (!absl::IsCancelled(s)) {
      LogWarn("FUSE passthrough: no copy of the file; it stays cached",
              {{"name", name_}, {"ino", ino}, {"bytes", bytes}, {"error", s.ToString()}});
    }
    return give_up(absl::IsCancelled(s) ? Node::Copy::kNone : Node::Copy::kFailed);
  }
  {
    std::lock_guard<std::mutex> lock(node.mu);
    node.copy = Node::Copy::kReady;
    node.copy_fd = std::make_shared<const UniqueFd>(std::move(fd));
    node.charged = true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.assembled_files;
  ++stats_.copies;
  stats_.copy_bytes += bytes;
}

bool PassthroughFiles::Enqueue(format::Ino ino) {
  std::lock_guard<std::mutex> lock(copier_mu_);
  if (stop_.load()) return false;
  queue_.push_back(ino);
  if (!copier_.joinable()) copier_ = std::thread([this] { CopierLoop(); });
  copier_cv_.notify_all();
  return true;
}

void PassthroughFiles::CopierLoop() {
  for (;;) {
    format::Ino ino;
    {
      std::unique_lock<std::mutex> lock(copier_mu_);
      copying_ = false;
      copier_cv_.notify_all();
      copier_cv_.wait(lock, [&] { return stop_.load() || !queue_.empty(); });
      if (stop_.load()) return;
      ino = queue_.front();
      queue_.pop_front();
      copying_ = true;
    }
    Assemble(ino);
  }
}

void PassthroughFiles::WaitCopier() {
  std::unique_lock<std::mutex> lock(copier_mu_);
  copier_cv_.wait(lock, [&] { return stop_.load() || (!copying_ && queue_.empty()); });
}

void PassthroughFiles::StopCopier() {
  {
    std::lock_guard<std::mutex> lock(copier_mu_);
    stop_.store(true);
    queue_.clear();
    copier_cv_.notify_all();
  }
  if (copier_.joinable()) copier_.join();
}

std::shared_ptr<const UniqueFd> PassthroughFiles::CopyFd(format::Ino ino) {
  Node* node = FindNode(ino);
  if (node == nullptr) return nullptr;
  std::lock_guard<std::mutex> lock(node->mu);
  return node->copy == Node::Copy::kReady ? node->copy_fd : nullptr;
}

void PassthroughFiles::ReleaseCharges(bool drop_copies) {
  std::vector<std::pair<format::Ino, Node*>> nodes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ino, node] : nodes_) nodes.emplace_back(ino, node.get());
  }
  for (auto& [ino, node] : nodes) {
    std::lock_guard<std::mutex> l(node->mu);
    if (node->charged) reader_->cache()->SetExternalBytes(CopyPath(ino), 0);
    node->charged = false;
    if (drop_copies) {
      node->copy = Node::Copy::kNone;
      node->copy_fd.reset();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.copies = 0;
  stats_.copy_bytes = 0;
}

PassthroughFiles::Decision PassthroughFiles::Open(format::Ino ino) {
  Node& node = NodeOf(ino);
  std::lock_guard<std::mutex> lock(node.mu);
  Decision d;
  auto count = [&](bool passthrough) {
    std::lock_guard<std::mutex> l(mu_);
    ++(passthrough ? stats_.passthrough_opens : stats_.cached_opens);
  };
  if (node.inherited_passthrough || node.inherited_cached) {
    d.passthrough = node.inherited_passthrough;
    d.backing_id = node.backing_id;
    d.fh = (nonce_ << 2) | kUntracked;
    count(d.passthrough);
    return d;
  }
  if (node.passthrough == 0 && node.cached == 0 && enabled_.load()) {
    UniqueFd fd = BackingFd(ino, node);
    if (fd.valid()) {
      absl::StatusOr<int32_t> id = FuseBackingOpen(dev_fd_.load(), fd.get());
      if (id.ok()) {
        node.backing_id = *id;
        Append(fmt::format("P {} {}\n", ino, *id));
        std::lock_guard<std::mutex> l(mu_);
        ++stats_.backing_files;
      } else {
        LogWarn("FUSE passthrough: registering a backing file failed; the file stays cached",
                {{"name", name_}, {"ino", ino}, {"error", id.status().ToString()}});
      }
    }
  }
  if (node.backing_id > 0) {
    ++node.passthrough;
    d.passthrough = true;
    d.backing_id = node.backing_id;
    d.fh = (nonce_ << 2) | kPassthrough;
  } else {
    if (node.cached++ == 0) Append(fmt::format("C {}\n", ino));
    d.fh = (nonce_ << 2) | kCached;
  }
  count(d.passthrough);
  return d;
}

void PassthroughFiles::Release(format::Ino ino, uint64_t fh) {
  if ((fh >> 2) != nonce_) return;  // a predecessor's open, or untracked
  const uint64_t mode = fh & 3;
  if (mode != kCached && mode != kPassthrough) return;
  Node& node = NodeOf(ino);
  std::lock_guard<std::mutex> lock(node.mu);
  int& n = mode == kCached ? node.cached : node.passthrough;
  if (n == 0 || --n > 0) return;
  // The ledger first: a crash between the two leaks an id rather than naming a closed one.
  Append(fmt::format("E {}\n", ino));
  if (mode == kPassthrough) {
    if (absl::Status s = FuseBackingClose(dev_fd_.load(), node.backing_id); !s.ok()) {
      LogWarn("FUSE passthrough: closing a backing id failed",
              {{"name", name_}, {"ino", ino}, {"error", s.ToString()}});
    }
    node.backing_id = 0;
    std::lock_guard<std::mutex> l(mu_);
    --stats_.backing_files;
  }
}

PassthroughStats PassthroughFiles::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  PassthroughStats s = stats_;
  s.enabled = enabled_.load();
  return s;
}

void PassthroughFiles::RemoveAll() {
  enabled_.store(false);
  StopCopier();
  std::vector<Node*> nodes;  // never erased from the map, so the pointers stay valid
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ino, node] : nodes_) nodes.push_back(node.get());
  }
  for (Node* node : nodes) {  // lock order: a node, then mu_ (as Open)
    std::lock_guard<std::mutex> l(node->mu);
    if (node->backing_id > 0) FuseBackingClose(dev_fd_.load(), node->backing_id).IgnoreError();
    node->backing_id = 0;
    node->passthrough = 0;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.backing_files = 0;
  }
  ledger_.Reset();
  std::error_code ec;
  fs::remove_all(dir_, ec);
  ReleaseCharges(/*drop_copies=*/true);
}

}  // namespace lazypull::mount
