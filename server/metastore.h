// MetaStore: durable snapshot metadata in SQLite (WAL, synchronous=FULL).
//
// The same model as containerd's snapshots/storage (bolt): keys and committed names share one
// namespace; every snapshot has a numeric id that never changes (also across Commit) and is
// never reused (AUTOINCREMENT), so directories named by id cannot collide.
//
// Thread-safety: all methods are thread-safe. Transactions are serialized: at most one
// Transaction exists at a time; BeginTransaction blocks until the previous one ends. Every
// mutation is durable (fsync'ed) when Transaction::Commit returns OK.
#ifndef LAZYPULL_SERVER_METASTORE_H_
#define LAZYPULL_SERVER_METASTORE_H_

#include <sqlite3.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/snapshot_info.h"

namespace lazypull {

// A snapshot as stored: its id, its Info, its stored usage (committed snapshots) and the ids of
// its parent chain, nearest parent first.
struct SnapshotRecord {
  int64_t id = 0;
  SnapshotInfo info;
  SnapshotUsage usage;
  std::vector<int64_t> parent_ids;
};

class MetaStore {
 public:
  class Transaction;

  // Opens (creating if needed) the database at `path`. Errors: Internal/Unavailable with the
  // path and SQLite's message.
  static absl::StatusOr<std::unique_ptr<MetaStore>> Open(const std::string& path);
  ~MetaStore();
  MetaStore(const MetaStore&) = delete;
  MetaStore& operator=(const MetaStore&) = delete;

  // Starts a write transaction (BEGIN IMMEDIATE). Blocks while another Transaction is alive.
  absl::StatusOr<std::unique_ptr<Transaction>> BeginTransaction();

 private:
  explicit MetaStore(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::mutex mu_;  // held by the live Transaction
};

// One SQLite transaction; rolled back on destruction unless Commit() succeeded. Not
// thread-safe: use it from one thread. Error codes follow containerd's errdefs mapping:
// NotFound, AlreadyExists, FailedPrecondition, InvalidArgument; Internal for SQLite failures.
class MetaStore::Transaction {
 public:
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // Info, usage, id and parent chain of `key`. NotFound if absent.
  absl::StatusOr<SnapshotRecord> Get(const std::string& key);

  // Inserts an active or view snapshot. NotFound if `parent` is set and absent;
  // InvalidArgument if the parent is not committed or `kind` is not active/view;
  // AlreadyExists if `key` is taken. Empty-valued labels are dropped. Returns the new record.
  absl::StatusOr<SnapshotRecord> Create(SnapshotKind kind, const std::string& key,
                                        const std::string& parent, Labels labels, absl::Time now);

  // Renames active `key` to committed `name`, keeping its id; labels are replaced by `labels`;
  // created/updated become `now`; `usage` is stored. AlreadyExists if `name` is taken;
  // NotFound if `key` is absent; FailedPrecondition if it is not active. Returns the id.
  absl::StatusOr<int64_t> CommitActive(const std::string& key, const std::string& name,
                                       const SnapshotUsage& usage, Labels labels, absl::Time now);

  // Deletes `key`. NotFound if absent; FailedPrecondition if it has children. Returns the
  // removed record.
  absl::StatusOr<SnapshotRecord> Remove(const std::string& key);

  // containerd's UpdateInfo: `paths` empty → replace labels; "labels" → replace labels;
  // "labels.<k>" → set <k> from info.labels (delete when absent/empty); other paths →
  // InvalidArgument. updated_at becomes `now`. NotFound if info.name is absent.
  absl::StatusOr<SnapshotInfo> UpdateInfo(const SnapshotInfo& info,
                                          const std::vector<std::string>& paths, absl::Time now);

  // Every snapshot (ordered by id), with info, usage and parent chain.
  absl::StatusOr<std::vector<SnapshotRecord>> ListAll();

  // The ids of all snapshots.
  absl::StatusOr<std::set<int64_t>> Ids();

  // Makes the transaction durable. After an error the transaction is rolled back.
  absl::Status Commit();

 private:
  friend class MetaStore;
  Transaction(sqlite3* db, std::unique_lock<std::mutex> lock) : db_(db), lock_(std::move(lock)) {}
  absl::StatusOr<Labels> ReadLabels(int64_t id);
  absl::Status WriteLabels(int64_t id, const Labels& labels);
  absl::StatusOr<std::vector<int64_t>> ParentChain(int64_t first_parent_id);

  sqlite3* db_;
  std::unique_lock<std::mutex> lock_;
  bool done_ = false;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_METASTORE_H_
