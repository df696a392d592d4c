#include "server/snapshotter.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "server/disk_usage.h"
#include "server/root_lock.h"

namespace lazypull {
namespace {

absl::Status Errno(int err, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

absl::Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) return Errno(errno, "mkdir", path);
  // Exact mode regardless of the daemon's umask (containerd's RootPermission expects 0755).
  if (::chmod(path.c_str(), mode) != 0) return Errno(errno, "chmod", path);
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno(errno, "open", path);
  if (::fsync(fd.get()) != 0) return Errno(errno, "fsync", path);
  return absl::OkStatus();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Builds the directory skeleton of a new snapshot under a temp name.
absl::StatusOr<std::string> MakeTempSnapshotDir(const std::string& snapshots_dir,
                                                SnapshotKind kind) {
  std::string templ = snapshots_dir + "/new-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) return Errno(errno, "mkdtemp", templ);
  absl::Status s = MakeDir(templ + "/fs", 0755);
  if (s.ok() && kind == SnapshotKind::kActive) s = MakeDir(templ + "/work", 0711);
  if (!s.ok()) {
    RemoveTree(templ).IgnoreError();
    return s;
  }
  return templ;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Snapshotter>> Snapshotter::Open(Options options) {
  if (options.root.empty()) return absl::InvalidArgumentError("snapshotter root is empty");
  while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
  if (absl::Status s = MakePrivateRoot(options.root); !s.ok()) return s;
  const std::string snapshots = options.root + "/snapshots";
  if (::mkdir(snapshots.c_str(), 0700) != 0 && errno != EEXIST) {
    return Errno(errno, "mkdir", snapshots);
  }
  if (::chmod(snapshots.c_str(), 0700) != 0) return Errno(errno, "chmod", snapshots);
  // SQLite creates its journal and WAL files with the database file's mode: make that 0600
  // before it opens (a file left wider by an older version is tightened too).
  const std::string db = options.root + "/metadata.db";
  {
    UniqueFd fd(::open(db.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return Errno(errno, "create", db);
    if (::fchmod(fd.get(), 0600) != 0) return Errno(errno, "chmod", db);
  }
  absl::StatusOr<std::unique_ptr<MetaStore>> store = MetaStore::Open(db);
  if (!store.ok()) return store.status();
  std::unique_ptr<Snapshotter> s(new Snapshotter(std::move(options), std::move(*store)));
  if (s->options_.remote != nullptr) {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = s->store_->BeginTransaction();
    if (!txn.ok()) return txn.status();
    absl::StatusOr<std::vector<SnapshotRecord>> records = (*txn)->ListAll();
    txn->reset();
    if (!records.ok()) return records.status();
    for (const SnapshotRecord& r : *records) {
      if (!r.info.labels.contains(kRemoteSnapshotLabel)) continue;
      absl::Status rs = s->options_.remote->RestoreRemoteLayer(
          r.id, r.info, r.parent_ids, SnapshotFsDir(s->snapshots_dir(), r.id));
      if (!rs.ok()) {
        LogWarn("cannot restore remote layer",
                {{"snapshot", r.info.name}, {"id", r.id}, {"error", rs.ToString()}});
      }
    }
  }
  return s;
}

std::vector<MountSpec> Snapshotter::MountsOf(const SnapshotRecord& record) const {
  return ComposeSnapshotMounts(snapshots_dir(), record.id,
                               record.info.kind == SnapshotKind::kView ? SnapshotMountMode::kView
                                                                       : SnapshotMountMode::kActive,
                               record.parent_ids, options_.overlay_index_off);
}

absl::StatusOr<std::vector<MountSpec>> Snapshotter::CreateSnapshot(SnapshotKind kind,
                                                                   const std::string& key,
                                                                   const std::string& parent,
                                                                   Labels labels) {
  if (key.empty()) return absl::InvalidArgumentError("snapshot key must not be empty");
  if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;

  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  // The temp dir is created while holding the transaction so Cleanup cannot take it for a
  // leftover.
  const std::string dir = snapshots_dir();
  absl::StatusOr<std::string> temp = MakeTempSnapshotDir(dir, kind);
  if (!temp.ok()) return temp.status();
  auto drop_temp = [&] { RemoveTree(*temp).IgnoreError(); };

  absl::StatusOr<SnapshotRecord> record =
      (*txn)->Create(kind, key, parent, std::move(labels), absl::Now());
  if (!record.ok()) {
    drop_temp();
    return record.status();
  }
  if (!record->parent_ids.empty()) {
    std::string parent_fs = SnapshotFsDir(dir, record->parent_ids[0]);
    struct stat st;
    if (::stat(parent_fs.c_str(), &st) != 0) {
      absl::Status s = Errno(errno, "stat parent", parent_fs);
      drop_temp();
      return s;
    }
    std::string fs = *temp + "/fs";
    if (::lchown(fs.c_str(), st.st_uid, st.st_gid) != 0) {
      absl::Status s = Errno(errno, "chown", fs);
      drop_temp();
      return s;
    }
  }
  std::string final_dir = SnapshotDir(dir, record->id);
  // An id whose transaction never committed (crash) may be handed out again; its directory,
  // if any, is a leftover.
  if (Exists(final_dir)) {
    if (absl::Status s = RemoveTree(final_dir); !s.ok()) {
      drop_temp();
      return s;
    }
  }
  if (::rename(temp->c_str(), final_dir.c_str()) != 0) {
    absl::Status s = Errno(errno, absl::StrCat("rename ", *temp, " to"), final_dir);
    drop_temp();
    return s;
  }
  absl::Status s = SyncDir(dir);
  if (s.ok()) s = (*txn)->Commit();
  if (!s.ok()) {
    RemoveTree(final_dir).IgnoreError();
    return s;
  }
  return MountsOf(*record);
}

absl::StatusOr<std::vector<MountSpec>> Snapshotter::MaybePrepareRemote(const std::string& key,
                                                                       const std::string& parent,
                                                                       const Labels& labels) {
  const std::string& target = labels.at(kTargetSnapshotRefLabel);
  if (absl::StatusOr<SnapshotInfo> existing = Stat(target); existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat("target snapshot ", target, " already exists"));
  }
  absl::StatusOr<std::vector<MountSpec>> mounts =
      CreateSnapshot(SnapshotKind::kActive, key, parent, labels);
  if (!mounts.ok()) return mounts;

  absl::StatusOr<SnapshotRecord> record;
  {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    if (!txn.ok()) return txn.status();
    record = (*txn)->Get(key);
  }
  if (!record.ok()) return mounts;  // removed concurrently; let the caller find out
  std::string fs_dir = SnapshotFsDir(snapshots_dir(), record->id);
  RemoteLayerRequest request{.key = key,
                             .parent = parent,
                             .target_name = target,
                             .labels = labels,
                             .snapshot_id = record->id,
                             .parent_ids = record->parent_ids};
  absl::StatusOr<Labels> extra = options_.remote->PrepareRemoteLayer(request, fs_dir);
  if (!extra.ok()) {
    LogDebug("layer is not remote, falling back to a normal snapshot",
             {{"key", key}, {"target", target}, {"reason", extra.status().ToString()}});
    return mounts;
  }
  Labels commit_labels = labels;
  for (auto& [k, v] : *extra) commit_labels[k] = v;
  commit_labels[kRemoteSnapshotLabel] = "remote snapshot";
  absl::Status committed = absl::OkStatus();
  {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    committed = txn.status();
    if (committed.ok()) {
      // A lazily mounted layer is not measured: that would fetch its whole tree.
      absl::StatusOr<int64_t> id =
          (*txn)->CommitActive(key, target, SnapshotUsage{}, std::move(commit_labels), absl::Now());
      committed = id.ok() ? (*txn)->Commit() : id.status();
    }
  }
  if (committed.ok()) {
    LogInfo("remote snapshot committed", {{"key", key}, {"target", target}, {"id", record->id}});
    return absl::AlreadyExistsError(absl::StrCat("target snapshot ", target, " (remote)"));
  }
  options_.remote->ReleaseRemoteLayer(record->id, fs_dir).IgnoreError();
  if (absl::IsAlreadyExists(committed)) {
    Remove(key).IgnoreError();
    return committed;
  }
  LogWarn("cannot commit remote snapshot",
          {{"key", key}, {"target", target}, {"error", committed.ToString()}});
  return mounts;
}

absl::StatusOr<std::vector<MountSpec>> Snapshotter::Prepare(const std::string& key,
                                                            const std::string& parent,
                                                            Labels labels) {
  if (options_.remote != nullptr && !key.empty() && labels.contains(kTargetSnapshotRefLabel) &&
      !labels.at(kTargetSnapshotRefLabel).empty()) {
    if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;
    return MaybePrepareRemote(key, parent, labels);
  }
  absl::StatusOr<std::vector<MountSpec>> mounts =
      CreateSnapshot(SnapshotKind::kActive, key, parent, std::move(labels));
  // A container's rootfs on lazy layers: it is about to start (startup prefetch).
  if (mounts.ok() && options_.remote != nullptr && !parent.empty()) {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    absl::StatusOr<SnapshotRecord> record =
        txn.ok() ? (*txn)->Get(key) : absl::StatusOr<SnapshotRecord>(txn.status());
    if (txn.ok()) txn->reset();
    if (record.ok()) options_.remote->ContainerPrepared(record->parent_ids);
  }
  return mounts;
}

absl::StatusOr<std::vector<MountSpec>> Snapshotter::View(const std::string& key,
                                                         const std::string& parent, Labels labels) {
  return CreateSnapshot(SnapshotKind::kView, key, parent, std::move(labels));
}

absl::StatusOr<std::vector<MountSpec>> Snapshotter::Mounts(const std::string& key) {
  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<SnapshotRecord> record = (*txn)->Get(key);
  if (!record.ok()) return record.status();
  if (record->info.kind != SnapshotKind::kActive && record->info.kind != SnapshotKind::kView) {
    return absl::FailedPreconditionError(
        absl::StrCat("requested snapshot ", key, " not active or view"));
  }
  if (options_.remote != nullptr) {
    for (int64_t id : record->parent_ids) {
      if (absl::Status s = options_.remote->CheckLayerAvailable(id); !s.ok()) return s;
    }
  }
  return MountsOf(*record);
}

absl::Status Snapshotter::Commit(const std::string& name, const std::string& key, Labels labels) {
  if (name.empty()) return absl::InvalidArgumentError("committed snapshot name must not be empty");
  if (key.empty()) return absl::InvalidArgumentError("snapshot key must not be empty");
  if (absl::Status s = ValidateLabels(labels); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<SnapshotRecord> record = (*txn)->Get(key);
  SnapshotUsage usage;
  if (record.ok() && record->info.kind == SnapshotKind::kActive) {
    absl::StatusOr<SnapshotUsage> measured =
        MeasureDiskUsage(SnapshotFsDir(snapshots_dir(), record->id));
    if (!measured.ok()) return measured.status();
    usage = *measured;
  }
  // CommitActive reports AlreadyExists / NotFound / FailedPrecondition in containerd's order.
  absl::StatusOr<int64_t> id =
      (*txn)->CommitActive(key, name, usage, std::move(labels), absl::Now());
  if (!id.ok()) return id.status();
  return (*txn)->Commit();
}

absl::Status Snapshotter::Remove(const std::string& key) {
  absl::StatusOr<SnapshotRecord> removed;
  {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    if (!txn.ok()) return txn.status();
    removed = (*txn)->Remove(key);
    if (!removed.ok()) return removed.status();
    if (absl::Status s = (*txn)->Commit(); !s.ok()) return s;
  }
  // The metadata is gone: failures below leave a leftover for Cleanup, not an error.
  std::string dir = SnapshotDir(snapshots_dir(), removed->id);
  if (options_.remote != nullptr && removed->info.labels.contains(kRemoteSnapshotLabel)) {
    absl::Status s = options_.remote->ReleaseRemoteLayer(removed->id, dir + "/fs");
    if (!s.ok()) LogWarn("cannot release remote layer", {{"path", dir}, {"error", s.ToString()}});
  }
  if (absl::Status s = RemoveTree(dir); !s.ok()) {
    LogWarn("failed to remove snapshot directory", {{"path", dir}, {"error", s.ToString()}});
  }
  return absl::OkStatus();
}

absl::StatusOr<SnapshotInfo> Snapshotter::Stat(const std::string& key) {
  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<SnapshotRecord> record = (*txn)->Get(key);
  if (!record.ok()) return record.status();
  return std::move(record->info);
}

absl::StatusOr<SnapshotInfo> Snapshotter::Update(const SnapshotInfo& info,
                                                 const std::vector<std::string>& paths) {
  if (info.name.empty()) return absl::InvalidArgumentError("snapshot name must not be empty");
  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<SnapshotInfo> updated = (*txn)->UpdateInfo(info, paths, absl::Now());
  if (!updated.ok()) return updated.status();
  if (absl::Status s = (*txn)->Commit(); !s.ok()) return s;
  return updated;
}

absl::StatusOr<std::vector<SnapshotInfo>> Snapshotter::List(const SnapshotFilter& filter) {
  absl::StatusOr<std::vector<SnapshotRecord>> records;
  {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    if (!txn.ok()) return txn.status();
    records = (*txn)->ListAll();
    if (!records.ok()) return records.status();
  }
  std::vector<SnapshotInfo> out;
  for (SnapshotRecord& r : *records) {
    if (filter.Match(r.info)) out.push_back(std::move(r.info));
  }
  return out;
}

absl::StatusOr<SnapshotUsage> Snapshotter::Usage(const std::string& key) {
  absl::StatusOr<SnapshotRecord> record;
  {
    absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
    if (!txn.ok()) return txn.status();
    record = (*txn)->Get(key);
    if (!record.ok()) return record.status();
  }
  if (record->info.kind == SnapshotKind::kActive) {
    return MeasureDiskUsage(SnapshotFsDir(snapshots_dir(), record->id));
  }
  return record->usage;
}

absl::StatusOr<int> Snapshotter::Cleanup() {
  // Held throughout: no snapshot can be created (and reuse a leftover's id) meanwhile.
  absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> txn = store_->BeginTransaction();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<std::set<int64_t>> ids = (*txn)->Ids();
  if (!ids.ok()) return ids.status();
  const std::string dir = snapshots_dir();
  std::vector<std::string> leftovers;
  {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Errno(errno, "opendir", dir);
    while (struct dirent* ent = ::readdir(d)) {
      absl::string_view name = ent->d_name;
      if (name == "." || name == "..") continue;
      int64_t id = 0;
      if (absl::SimpleAtoi(name, &id) && std::to_string(id) == name && ids->contains(id)) {
        continue;
      }
      leftovers.emplace_back(name);
    }
    ::closedir(d);
  }
  int removed = 0;
  for (const std::string& name : leftovers) {
    std::string path = dir + "/" + name;
    int64_t id = 0;
    if (options_.remote != nullptr && absl::SimpleAtoi(name, &id)) {
      options_.remote->ReleaseRemoteLayer(id, path + "/fs").IgnoreError();
    }
    if (absl::Status s = RemoveTree(path); !s.ok()) {
      LogWarn("cleanup: cannot remove directory", {{"path", path}, {"error", s.ToString()}});
      continue;
    }
    ++removed;
  }
  LogInfo("cleanup done", {{"removed_dirs", removed}});
  return removed;
}

}  // namespace lazypull
