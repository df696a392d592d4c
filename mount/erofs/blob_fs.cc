#include "mount/erofs/blob_fs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <optional>
#include <vector>

#include "base/logging.h"
#include "fmt/format.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount::erofs {
namespace {

// Attributes of a blob never change for an inode number; names come and go (entry timeout 0).
constexpr double kAttrTimeout = 24 * 3600;

BlobFs& Fs(fuse_req_t req) {
  return *static_cast<BlobFs*>(static_cast<FuseSessionUserdata*>(fuse_req_userdata(req)));
}

template <typename F>
void Guard(fuse_req_t req, const char* op, F&& body) {
  // Read before body(): once replied, the request is gone.
  FsOpObserver* observer = Fs(req).options().op_observer.get();
  const auto start = observer != nullptr ? std::chrono::steady_clock::now()
                                         : std::chrono::steady_clock::time_point();
  try {
    body();
    if (observer != nullptr) observer->OnOp(kBlobFs, op, std::chrono::steady_clock::now() - start);
  } catch (const std::exception& e) {
    LogError("blob fs callback threw", {{"op", op}, {"error", e.what()}});
    fuse_reply_err(req, EIO);
  } catch (...) {
    LogError("blob fs callback threw", {{"op", op}});
    fuse_reply_err(req, EIO);
  }
}

// Blobs are whole layers of possibly private images: only the daemon's user (root, which is
// also who the kernel's EROFS mounts open them as) may open them; the mount has
// default_permissions, so the kernel enforces these modes.
void FileStat(uint64_t ino, const BlobFs::Entry& e, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_mode = S_IFREG | 0400;
  st->st_uid = ::geteuid();
  st->st_gid = ::getegid();
  st->st_nlink = e.registered ? 1 : 0;
  st->st_size = static_cast<off_t>(e.size);
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((e.size + 511) / 512);
}

void RootStat(struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = FUSE_ROOT_ID;
  st->st_mode = S_IFDIR | 0500;
  st->st_uid = ::geteuid();
  st->st_gid = ::getegid();
  st->st_nlink = 2;
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* fs = static_cast<BlobFs*>(static_cast<FuseSessionUserdata*>(userdata));
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->max_read = fs->options().max_read;
  conn->max_readahead = fs->options().max_read;
  conn->max_write = fs->options().max_read;  // also sizes max_pages (the largest read)
  conn->max_background = 64;
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "lookup", [&] {
    if (parent != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOTDIR);
    uint64_t ino = 0;
    std::shared_ptr<BlobFs::Entry> e = Fs(req).Lookup(name, &ino);
    fuse_entry_param p;
    std::memset(&p, 0, sizeof(p));
    if (e == nullptr) return (void)fuse_reply_err(req, ENOENT);
    p.ino = ino;
    p.generation = 1;
    p.attr_timeout = kAttrTimeout;
    p.entry_timeout = 0;
    FileStat(ino, *e, &p.attr);
    if (fuse_reply_entry(req, &p) != 0) Fs(req).Forget(ino, 1);  // the kernel took no ref
  });
}

void OnForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Fs(req).Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OnForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) Fs(req).Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guard(req, "getattr", [&] {
    struct stat st;
    if (ino == FUSE_ROOT_ID) {
      RootStat(&st);
    } else {
      std::shared_ptr<BlobFs::Entry> e = Fs(req).Get(ino);
      if (e == nullptr) return (void)fuse_reply_err(req, ENOENT);
      FileStat(ino, *e, &st);
    }
    fuse_reply_attr(req, &st, kAttrTimeout);
  });
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "open", [&] {
    if (ino == FUSE_ROOT_ID) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
    if (!Fs(req).Open(ino)) return (void)fuse_reply_err(req, ENOENT);
    fi->direct_io = 1;  // EROFS keeps the pages; no second page cache here
    fi->keep_cache = 0;
    fi->noflush = 1;
    if (fuse_reply_open(req, fi) != 0) Fs(req).Release(ino);
  });
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, "read", [&] {
    std::shared_ptr<BlobSource> source = Fs(req).SourceOf(ino);
    if (source == nullptr || off < 0) {
      return (void)fuse_reply_err(req, source == nullptr ? ENOENT : EINVAL);
    }
    // One buffer per FUSE worker thread, reused (see the layer file system).
    thread_local std::vector<char> buf;
    if (buf.size() < size) buf.resize(std::max<size_t>(size, 128 << 10));
    absl::StatusOr<size_t> n = source->ReadAt(static_cast<uint64_t>(off), buf.data(), size);
    if (!n.ok()) return (void)fuse_reply_err(req, EIO);
    fuse_reply_buf(req, buf.data(), *n);
  });
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Fs(req).Release(ino);
  fuse_reply_err(req, 0);
}

void OnOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOTDIR);
  fuse_reply_open(req, fi);
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, "readdir", [&] {
    if (ino != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOTDIR);
    std::vector<std::pair<uint64_t, std::string>> entries = {{FUSE_ROOT_ID, "."},
                                                             {FUSE_ROOT_ID, ".."}};
    for (auto& [i, name] : Fs(req).List()) entries.push_back({i, std::move(name)});
    std::string buf(size, '\0');
    size_t used = 0;
    for (size_t pos = std::max<off_t>(off, 0); pos < entries.size(); ++pos) {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = entries[pos].first;
      st.st_mode = pos < 2 ? S_IFDIR : S_IFREG;
      size_t need = fuse_add_direntry(req, buf.data() + used, size - used,
                                      entries[pos].second.c_str(), &st, pos + 1);
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void OnStatfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st;
  std::memset(&st, 0, sizeof(st));
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.forget = OnForget;
  ops.forget_multi = OnForgetMulti;
  ops.getattr = OnGetattr;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.release = OnRelease;
  ops.opendir = OnOpendir;
  ops.readdir = OnReaddir;
  ops.statfs = OnStatfs;
  return ops;
}

const fuse_lowlevel_ops& BlobFsOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace

BlobFs::File::~File() { fs_->Remove(name_); }

absl::StatusOr<std::unique_ptr<BlobFs>> BlobFs::Mount(const std::string& dir,
                                                      const BlobFsOptions& options) {
  // The connection of a previous daemon's blob file system, kept by the holder: adopt it. (Never
  // probe it before: with nobody serving, that would wait forever.)
  std::optional<HeldConnection> adopt;
  if (options.holder != nullptr) {
    absl::StatusOr<HeldConnection> held = options.holder->Get(dir);
    if (held.ok()) {
      adopt = std::move(*held);
    } else if (held.status().code() != absl::StatusCode::kNotFound) {
      LogWarn("cannot ask the FUSE holder; mounting the blob file system afresh",
              {{"dir", dir}, {"error", held.status().ToString()}});
    }
  }
  if (!adopt.has_value() && IsStaleFuseMount(dir)) {
    if (umount2(dir.c_str(), MNT_DETACH) != 0) {
      return absl::FailedPreconditionError(
          fmt::format("detaching the stale blob file system at {}: {}", dir, strerror(errno)));
    }
    LogInfo("detached stale FUSE mount", {{"path", dir}});
  }
  std::unique_ptr<BlobFs> fs(new BlobFs(dir, options));
  fs->adopted_ = adopt.has_value();
  fs->settling_ = fs->adopted_;
  FuseSessionOptions o;
  o.name = "blob file system";
  // allow_other: EROFS reads the blob with the credentials of whoever faults the page in
  // (e.g. a container's process), not the daemon's. default_permissions: the kernel checks
  // the files' modes (0400, the daemon's user) at open, so only root opens a blob; EROFS
  // opens it once, as root, when the layer is mounted.
  o.mount_options = {"ro",
                     "allow_other",
                     "default_permissions",
                     "subtype=lazypull",
                     "fsname=lazypull:blobs",
                     fmt::format("max_read={}", options.max_read)};
  o.max_threads = options.max_threads;
  o.unmount_timeout = options.unmount_timeout;
  o.holder = options.holder;
  o.adopt = std::move(adopt);
  o.on_resent = [raw = fs.get()](uint64_t nodeid) { raw->CountResent(nodeid); };
  absl::StatusOr<std::unique_ptr<FuseSession>> session =
      FuseSession::Start(BlobFsOps(), fs.get(), dir, std::move(o));
  if (!session.ok()) return session.status();
  fs->session_ = std::move(*session);
  LogInfo(fs->adopted_ ? "blob file system adopted" : "blob file system mounted", {{"dir", dir}});
  return fs;
}

BlobFs::~BlobFs() {
  Settle();  // no request may wait for a file any more
  if (session_ != nullptr) session_->Stop().IgnoreError();
}

absl::Status BlobFs::Detach() {
  Settle();
  if (session_ == nullptr) return absl::OkStatus();
  return session_->Detach();
}

void BlobFs::Settle() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!settling_) return;
  settling_ = false;
  added_.notify_all();
  resent_early_.clear();
}

std::unique_ptr<BlobFs::File> BlobFs::Add(const std::string& name_hint,
                                          std::shared_ptr<BlobSource> source, BlobAddOptions add) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t ino = add.ino;
  if (ino != 0 && (ino <= FUSE_ROOT_ID || ino >= kVolatileInoBase || inodes_.count(ino) > 0)) {
    LogWarn("blob file number in use or out of range; this file will not survive a restart",
            {{"name", name_hint}, {"ino", ino}});
    ino = 0;
  }
  if (ino == 0) ino = next_volatile_++;
  std::string name = fmt::format("{}.{}", name_hint, ino);
  auto e = std::make_shared<Entry>();
  e->name = name;
  e->size = source->size();
  e->source = std::move(source);
  if (add.reattach && ino < kVolatileInoBase) e->opens = 1;
  if (auto it = resent_early_.find(ino); it != resent_early_.end()) {
    e->resent->store(it->second);
    resent_early_.erase(it);
  }
  std::shared_ptr<std::atomic<uint64_t>> resent = e->resent;
  inodes_[ino] = std::move(e);
  names_[name] = ino;
  added_.notify_all();
  return std::unique_ptr<File>(new File(this, name, dir_ + "/" + name, ino, std::move(resent)));
}

void BlobFs::CountResent(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = inodes_.find(ino);
  if (it != inodes_.end()) {
    it->second->resent->fetch_add(1);
  } else if (settling_) {
    ++resent_early_[ino];
  }
}

std::shared_ptr<BlobFs::Entry> BlobFs::FindLocked(std::unique_lock<std::mutex>& lock,
                                                  uint64_t ino) {
  const auto deadline = std::chrono::steady_clock::now() + options_.adoption_wait;
  for (;;) {
    auto it = inodes_.find(ino);
    if (it != inodes_.end()) return it->second;
    if (ino == FUSE_ROOT_ID) return nullptr;
    if (std::shared_ptr<Entry> e = ResolveLocked(lock, ino)) return e;
    if (!settling_) return nullptr;
    if (added_.wait_until(lock, deadline) == std::cv_status::timeout) {
      LogWarn("a blob file of the previous daemon was not taken back in time",
              {{"ino", ino}, {"waited_ms", options_.adoption_wait.count()}});
      return nullptr;
    }
  }
}

std::shared_ptr<BlobFs::Entry> BlobFs::ResolveLocked(std::unique_lock<std::mutex>& lock,
                                                     uint64_t ino) {
  if (!adopted_ || !options_.resolve || ino <= FUSE_ROOT_ID || ino >= kVolatileInoBase) {
    return nullptr;
  }
  lock.unlock();
  std::shared_ptr<BlobSource> source = options_.resolve(ino);
  lock.lock();
  if (source == nullptr) return nullptr;
  if (auto it = inodes_.find(ino); it != inodes_.end()) return it->second;  // added meanwhile
  auto e = std::make_shared<Entry>();
  e->size = source->size();
  e->source = std::move(source);
  e->registered = false;
  e->opens = 1;  // the old mount's
  if (auto it = resent_early_.find(ino); it != resent_early_.end()) {
    e->resent->store(it->second);
    resent_early_.erase(it);
  }
  inodes_[ino] = e;
  return e;
}

void BlobFs::Wake() {
  std::lock_guard<std::mutex> lock(mu_);
  added_.notify_all();
}

size_t BlobFs::Revoke(uint64_t first, uint64_t last) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> cut;
  for (auto it = inodes_.lower_bound(first); it != inodes_.end() && it->first <= last; ++it) {
    if (!it->second->registered && it->second->source != nullptr) cut.push_back(it->first);
  }
  for (uint64_t ino : cut) {
    inodes_[ino]->source.reset();
    MaybeEraseLocked(ino);
  }
  return cut.size();
}

void BlobFs::Remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return;
  const uint64_t ino = it->second;
  names_.erase(it);
  inodes_[ino]->registered = false;
  MaybeEraseLocked(ino);
}

void BlobFs::MaybeEraseLocked(uint64_t ino) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  Entry& e = *it->second;
  if (e.registered || e.opens > 0) return;
  e.source.reset();
  if (e.nlookup == 0) inodes_.erase(it);
}

std::shared_ptr<BlobFs::Entry> BlobFs::Lookup(const std::string& name, uint64_t* ino) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return nullptr;
  *ino = it->second;
  std::shared_ptr<Entry>& e = inodes_.at(*ino);
  ++e->nlookup;
  return e;
}

std::shared_ptr<BlobSource> BlobFs::SourceOf(uint64_t ino) {
  std::unique_lock<std::mutex> lock(mu_);
  std::shared_ptr<Entry> e = FindLocked(lock, ino);
  return e == nullptr ? nullptr : e->source;
}

std::shared_ptr<BlobFs::Entry> BlobFs::Get(uint64_t ino) {
  std::unique_lock<std::mutex> lock(mu_);
  return FindLocked(lock, ino);
}

void BlobFs::Forget(uint64_t ino, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  it->second->nlookup -= std::min(n, it->second->nlookup);
  MaybeEraseLocked(ino);
}

bool BlobFs::Open(uint64_t ino) {
  std::unique_lock<std::mutex> lock(mu_);
  std::shared_ptr<Entry> e = FindLocked(lock, ino);
  if (e == nullptr || e->source == nullptr) return false;
  ++e->opens;
  return true;
}

void BlobFs::Release(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  if (it->second->opens > 0) --it->second->opens;
  MaybeEraseLocked(ino);
}

std::map<uint64_t, std::string> BlobFs::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<uint64_t, std::string> out;
  for (const auto& [name, ino] : names_) out[ino] = name;
  return out;
}

size_t BlobFs::live_files() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inodes_.size();
}

}  // namespace lazypull::mount::erofs
