#include "mount/fuse/fuse_layer_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "base/logging.h"

namespace lazypull::mount {
namespace {

using format::Ino;
using format::LayerIndex;

FuseLayerFsContext& Ctx(fuse_req_t req) {
  return *static_cast<FuseLayerFsContext*>(
      static_cast<FuseSessionUserdata*>(fuse_req_userdata(req)));
}
const LayerIndex& Index(fuse_req_t req) { return Ctx(req).reader->index(); }
double Timeout(fuse_req_t req) {
  return static_cast<double>(Ctx(req).options.attr_timeout.count());
}

// Runs a callback body; any escaping exception becomes EIO (never unwinds into libfuse).
template <typename F>
void Guard(fuse_req_t req, const char* op, F&& body) {
  // Read before body(): once replied, the request is gone.
  FsOpObserver* observer = Ctx(req).options.op_observer.get();
  const auto start = observer != nullptr ? std::chrono::steady_clock::now()
                                         : std::chrono::steady_clock::time_point();
  try {
    body();
    if (observer != nullptr) {
      observer->OnOp(kLayerFs, op, std::chrono::steady_clock::now() - start);
    }
  } catch (const std::exception& e) {
    LogError("fuse callback threw", {{"op", op}, {"error", e.what()}});
    fuse_reply_err(req, EIO);
  } catch (...) {
    LogError("fuse callback threw", {{"op", op}});
    fuse_reply_err(req, EIO);
  }
}

bool FillEntry(const LayerIndex& index, Ino ino, double timeout, fuse_entry_param* e) {
  std::memset(e, 0, sizeof(*e));
  if (!FuseLayerStat(index, ino, &e->attr)) return false;
  e->ino = ino;
  e->generation = 1;
  e->attr_timeout = timeout;
  e->entry_timeout = timeout;
  return true;
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<FuseLayerFsContext*>(static_cast<FuseSessionUserdata*>(userdata));
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;  // always plus: saves a lookup per entry
  }
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // No OPENDIR/RELEASEDIR round trips: two per directory of a walk, for nothing the kernel
  // cannot check itself (the tree is read-only). Costs the kernel's readdir cache, which saved
  // at most one READDIRPLUS, and only on a warm walk.
  if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
    conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
    ctx->no_opendir = true;
  }
  // No OPEN/RELEASE round trips either: the kernel then opens every file with FOPEN_KEEP_CACHE
  // (what OnOpen answers) and file handle 0, so nothing per open lives here. Opens for writing
  // never get this far: the mount is read-only (MS_RDONLY), the VFS answers EROFS itself.
  // With passthrough, OPEN comes back: it is where a file gets its backing file.
  const bool passthrough =
      ctx->passthrough != nullptr && ctx->channel != nullptr && ctx->channel->passthrough();
  if ((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && !passthrough) {
    conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
    ctx->no_open.store(true);
  }
  if (ctx->options.zero_copy && (conn->capable & FUSE_CAP_SPLICE_WRITE)) {
    conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  }
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;  // data never changes: keep the page cache
  conn->max_read = ctx->options.max_read;   // must equal the max_read mount option
  conn->max_readahead = ctx->options.max_read;
  conn->max_write = ctx->options.max_read;  // also sizes max_pages (the largest read)
  conn->max_background = 64;
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "lookup", [&] {
    const LayerIndex& index = Index(req);
    if (!index.IsValid(parent)) return (void)fuse_reply_err(req, ENOENT);
    auto pattr = index.GetAttr(parent);
    if ((pattr->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
    fuse_entry_param e;
    std::optional<Ino> ino = index.Lookup(parent, name);
    if (!ino) {
      // A negative entry: the kernel caches the absence for as long as the attributes.
      std::memset(&e, 0, sizeof(e));
      e.ino = 0;
      e.entry_timeout = Timeout(req);
      return (void)fuse_reply_entry(req, &e);
    }
    if (!FillEntry(index, *ino, Timeout(req), &e)) return (void)fuse_reply_err(req, ENOENT);
    fuse_reply_entry(req, &e);
  });
}

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guard(req, "getattr", [&] {
    struct stat st;
    if (!FuseLayerStat(Index(req), ino, &st)) return (void)fuse_reply_err(req, ENOENT);
    fuse_reply_attr(req, &st, Timeout(req));
  });
}

void OnReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guard(req, "readlink", [&] {
    const LayerIndex& index = Index(req);
    auto attr = index.GetAttr(ino);
    if (!attr) return (void)fuse_reply_err(req, ENOENT);
    if ((attr->mode & S_IFMT) != S_IFLNK) return (void)fuse_reply_err(req, EINVAL);
    std::string target(index.SymlinkTarget(ino));
    fuse_reply_readlink(req, target.c_str());
  });
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "open", [&] {
    // ENOSYS once: the kernel then stops sending OPEN (and RELEASE) for this mount.
    if (Ctx(req).no_open) return (void)fuse_reply_err(req, ENOSYS);
    auto attr = Index(req).GetAttr(ino);
    if (!attr) return (void)fuse_reply_err(req, ENOENT);
    if ((attr->mode & S_IFMT) == S_IFDIR) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      return (void)fuse_reply_err(req, EROFS);
    }
    fi->keep_cache = 1;  // immutable: page cache survives opens
    fi->noflush = 1;
    if (PassthroughFiles* p = Ctx(req).passthrough;
        p != nullptr && (attr->mode & S_IFMT) == S_IFREG) {
      PassthroughFiles::Decision d = p->Open(ino);
      fi->fh = d.fh;
      if (d.passthrough) {
        fi->keep_cache = 0;  // the kernel refuses it beside FOPEN_PASSTHROUGH
        FuseChannel::ReplyNextOpenWithBacking(d.backing_id);
      }
    }
    fuse_reply_open(req, fi);
  });
}

// Zeros for holes in zero-copy replies (read only; as large as the largest read).
const char* ZeroPage(size_t size) {
  static const std::vector<char> zeros(4 << 20, '\0');
  return size <= zeros.size() ? zeros.data() : nullptr;
}

// Replies straight from the chunk-cache files when every byte is local and verified: the
// kernel splices their page-cache pages into the reply, with no copy through this process.
bool ReplyFromCacheFiles(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  thread_local std::vector<LayerReader::Span> spans;
  if (!Ctx(req).reader->ReadSpans(ino, off, size, &spans)) return false;
  std::vector<char> storage(sizeof(fuse_bufvec) +
                            std::max<size_t>(spans.size(), 1) * sizeof(fuse_buf));
  auto* vec = reinterpret_cast<fuse_bufvec*>(storage.data());
  *vec = FUSE_BUFVEC_INIT(0);
  vec->count = spans.size();
  for (size_t i = 0; i < spans.size(); ++i) {
    fuse_buf& b = vec->buf[i];
    b = fuse_buf{};
    b.size = spans[i].length;
    if (spans[i].file) {
      b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      b.fd = spans[i].file->fd();
      b.pos = static_cast<off_t>(spans[i].offset);
    } else {
      b.mem = const_cast<char*>(ZeroPage(b.size));
      if (b.mem == nullptr) return false;
    }
  }
  fuse_reply_data(req, vec, FUSE_BUF_SPLICE_MOVE);
  spans.clear();  // closes files evicted meanwhile
  return true;
}

// Replies from the file's passthrough copy when it has one (a cached open of a file whose copy
// was made since): the copy is its source of truth, and its chunks may have been evicted.
bool ReplyFromCopy(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  PassthroughFiles* p = Ctx(req).passthrough;
  if (p == nullptr) return false;
  std::shared_ptr<const UniqueFd> copy = p->CopyFd(ino);
  if (copy == nullptr) return false;
  auto attr = Index(req).GetAttr(ino);
  if (!attr) return false;
  const uint64_t end = std::min<uint64_t>(attr->size, static_cast<uint64_t>(off) + size);
  if (static_cast<uint64_t>(off) >= end) return (void)fuse_reply_buf(req, nullptr, 0), true;
  fuse_bufvec vec = FUSE_BUFVEC_INIT(end - static_cast<uint64_t>(off));
  vec.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  vec.buf[0].fd = copy->get();
  vec.buf[0].pos = off;
  fuse_reply_data(req, &vec, FUSE_BUF_SPLICE_MOVE);
  return true;
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, "read", [&] {
    if (off < 0) return (void)fuse_reply_err(req, EINVAL);
    if (ReplyFromCopy(req, ino, size, off)) return;
    if (Ctx(req).options.zero_copy && ReplyFromCacheFiles(req, ino, size, off)) return;
    // One buffer per FUSE worker thread, reused: a fresh max_read-sized allocation per read
    // would cost an mmap and a page fault per 4 KiB.
    thread_local std::vector<char> buf;
    if (buf.size() < size) buf.resize(std::max<size_t>(size, 128 << 10));
    absl::StatusOr<size_t> n = Ctx(req).reader->Read(ino, off, buf.data(), size);
    if (!n.ok()) {
      int err = n.status().code() == absl::StatusCode::kInvalidArgument ? EISDIR : EIO;
      return (void)fuse_reply_err(req, err);
    }
    fuse_reply_buf(req, buf.data(), *n);
  });
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "release", [&] {
    if (PassthroughFiles* p = Ctx(req).passthrough; p != nullptr) p->Release(ino, fi->fh);
    fuse_reply_err(req, 0);
  });
}

void OnOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "opendir", [&] {
    // ENOSYS once: the kernel then stops sending OPENDIR (and RELEASEDIR) for this mount.
    if (Ctx(req).no_opendir) return (void)fuse_reply_err(req, ENOSYS);
    auto attr = Index(req).GetAttr(ino);
    if (!attr) return (void)fuse_reply_err(req, ENOENT);
    if ((attr->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

// Directory offsets: 0 = ".", 1 = "..", 2 + i = child i; an entry's "next offset" is its
// position + 1.
void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  const LayerIndex& index = Index(req);
  auto attr = index.GetAttr(ino);
  if (!attr) return (void)fuse_reply_err(req, ENOENT);
  if ((attr->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
  const size_t count = index.ChildCount(ino) + 2;
  std::string buf(size, '\0');
  size_t used = 0;
  for (size_t pos = std::max<off_t>(off, 0); pos < count; ++pos) {
    std::string name;
    Ino child;
    if (pos == 0) {
      name = ".";
      child = ino;
    } else if (pos == 1) {
      name = "..";
      child = index.Parent(ino);
    } else {
      format::DirEntry d = index.Child(ino, pos - 2);
      name = std::string(d.name);
      child = d.ino;
    }
    size_t need;
    if (plus) {
      fuse_entry_param e;
      if (pos < 2) {
        // No lookup reference for "." and "..": ino 0 keeps the kernel from taking one.
        std::memset(&e, 0, sizeof(e));
        e.attr.st_ino = child;
        e.attr.st_mode = S_IFDIR;
      } else if (!FillEntry(index, child, Timeout(req), &e)) {
        continue;
      }
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, pos + 1);
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = child;
      auto cattr = index.GetAttr(child);
      st.st_mode = cattr ? cattr->mode : S_IFDIR;
      need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, pos + 1);
    }
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, "readdir", [&] { ReadDir(req, ino, size, off, false); });
}

void OnReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, "readdirplus", [&] { ReadDir(req, ino, size, off, true); });
}

void OnReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guard(req, "getxattr", [&] {
    const LayerIndex& index = Index(req);
    // A layer without any xattr says so once for the whole mount: the kernel then answers
    // every getxattr itself (EOPNOTSUPP, which readers treat as "no xattr"). overlayfs asks
    // several trusted.overlay.* xattrs per lookup (metacopy, opaque, redirect, origin): without
    // this, a tree walk through an overlay costs one round trip to us per file.
    if (!index.has_xattrs()) return (void)fuse_reply_err(req, ENOSYS);
    if (!index.IsValid(ino)) return (void)fuse_reply_err(req, ENOENT);
    std::optional<std::string_view> value = index.GetXattr(ino, name);
    if (!value) return (void)fuse_reply_err(req, ENODATA);
    if (size == 0) return (void)fuse_reply_xattr(req, value->size());
    if (size < value->size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, value->data(), value->size());
  });
}

void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guard(req, "listxattr", [&] {
    const LayerIndex& index = Index(req);
    if (!index.IsValid(ino)) return (void)fuse_reply_err(req, ENOENT);
    std::string names;
    for (const auto& [name, value] : index.Xattrs(ino)) {
      names.append(name);
      names.push_back('\0');
    }
    if (size == 0) return (void)fuse_reply_xattr(req, names.size());
    if (size < names.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, names.data(), names.size());
  });
}

void OnStatfs(fuse_req_t req, fuse_ino_t) {
  Guard(req, "statfs", [&] {
    const LayerIndex& index = Index(req);
    struct statvfs st;
    std::memset(&st, 0, sizeof(st));
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = (index.total_file_bytes() + 4095) / 4096;
    st.f_bfree = 0;
    st.f_bavail = 0;
    st.f_files = index.inode_count();
    st.f_ffree = 0;
    st.f_favail = 0;
    st.f_namemax = 255;
    st.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &st);
  });
}

void OnAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  // default_permissions lets the kernel check modes; only writes are refused here.
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.getattr = OnGetattr;
  ops.readlink = OnReadlink;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.release = OnRelease;
  ops.opendir = OnOpendir;
  ops.readdir = OnReaddir;
  ops.readdirplus = OnReaddirplus;
  ops.releasedir = OnReleasedir;
  ops.getxattr = OnGetxattr;
  ops.listxattr = OnListxattr;
  ops.statfs = OnStatfs;
  ops.access = OnAccess;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& FuseLayerFsOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

bool FuseLayerStat(const LayerIndex& index, Ino ino, struct stat* st) {
  std::optional<format::InodeAttr> a = index.GetAttr(ino);
  if (!a) return false;
  std::memset(st, 0, sizeof(*st));
  st->st_ino = a->ino;
  st->st_mode = a->mode;
  st->st_nlink = a->nlink;
  st->st_uid = a->uid;
  st->st_gid = a->gid;
  st->st_rdev = makedev(a->dev_major, a->dev_minor);
  st->st_size = static_cast<off_t>(a->size);
  st->st_blksize = 4096;
  switch (a->mode & S_IFMT) {
    case S_IFREG: {
      uint64_t data = 0;
      for (const format::Chunk& c : index.Chunks(ino)) {
        if (c.compression != format::ChunkCompression::kZeros) data += c.length;
      }
      st->st_blocks = static_cast<blkcnt_t>((data + 4095) / 4096 * 8);
      break;
    }
    case S_IFDIR:
      st->st_blocks = 8;
      break;
    default:
      st->st_blocks = 0;
  }
  st->st_mtim.tv_sec = a->mtime_sec;
  st->st_mtim.tv_nsec = a->mtime_nsec;
  st->st_atim = st->st_mtim;
  st->st_ctim = st->st_mtim;
  return true;
}

}  // namespace lazypull::mount
