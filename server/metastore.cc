#include "server/metastore.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lazypull {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS snapshots(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key BLOB NOT NULL UNIQUE,
  parent_id INTEGER REFERENCES snapshots(id),
  kind INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels(
  snapshot_id INTEGER NOT NULL,
  key BLOB NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY(snapshot_id, key)) WITHOUT ROWID;
)sql";

absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("metadata db: ", what, ": ", sqlite3_errmsg(db)));
}

int64_t ToNanos(absl::Time t) { return absl::ToUnixNanos(t); }
absl::Time FromNanos(int64_t ns) { return absl::FromUnixNanos(ns); }

// A prepared statement, finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, absl::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus() : SqliteError(db_, "prepare");
  }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, absl::string_view v) {
    // Zero-length blobs must not be bound as NULL.
    sqlite3_bind_blob(stmt_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // Returns true when a row is available, false when done.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, "step");
  }
  absl::Status Run() {
    absl::StatusOr<bool> r = Step();
    return r.ok() ? absl::OkStatus() : r.status();
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Text(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("metadata db: ", sql, ": ", err ? err : ""));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

constexpr const char* kSelectColumns =
    "SELECT s.id, s.key, p.key, s.kind, s.created_ns, s.updated_ns, s.size, s.inodes, "
    "s.parent_id FROM snapshots s LEFT JOIN snapshots p ON s.parent_id = p.id ";

struct Row {
  SnapshotRecord record;
  int64_t parent_id = 0;  // 0: none
};

Row ReadRow(Statement& st) {
  Row row;
  row.record.id = st.Int(0);
  row.record.info.name = st.Text(1);
  row.record.info.parent = st.IsNull(2) ? "" : st.Text(2);
  row.record.info.kind = static_cast<SnapshotKind>(st.Int(3));
  row.record.info.created_at = FromNanos(st.Int(4));
  row.record.info.updated_at = FromNanos(st.Int(5));
  row.record.usage.size = st.Int(6);
  row.record.usage.inodes = st.Int(7);
  row.parent_id = st.IsNull(8) ? 0 : st.Int(8);
  return row;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = absl::UnavailableError(absl::StrCat(
        "cannot open metadata db ", path, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<MetaStore> store(new MetaStore(db));
  sqlite3_busy_timeout(db, 10000);
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;", "PRAGMA foreign_keys=ON;"}) {
    if (absl::Status s = Exec(db, pragma); !s.ok()) {
      return absl::UnavailableError(absl::StrCat(path, ": ", s.message()));
    }
  }
  if (absl::Status s = Exec(db, kSchema); !s.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": ", s.message()));
  }
  return store;
}

MetaStore::~MetaStore() { sqlite3_close(db_); }

absl::StatusOr<std::unique_ptr<MetaStore::Transaction>> MetaStore::BeginTransaction() {
  std::unique_lock<std::mutex> lock(mu_);
  if (absl::Status s = Exec(db_, "BEGIN IMMEDIATE;"); !s.ok()) return s;
  return std::unique_ptr<Transaction>(new Transaction(db_, std::move(lock)));
}

MetaStore::Transaction::~Transaction() {
  if (!done_) sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
}

absl::Status MetaStore::Transaction::Commit() {
  done_ = true;
  if (absl::Status s = Exec(db_, "COMMIT;"); !s.ok()) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Labels> MetaStore::Transaction::ReadLabels(int64_t id) {
  Statement st(db_, "SELECT key, value FROM labels WHERE snapshot_id = ?");
  if (!st.status().ok()) return st.status();
  st.Bind(1, id);
  Labels labels;
  while (true) {
    absl::StatusOr<bool> row = st.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    labels.emplace(st.Text(0), st.Text(1));
  }
  return labels;
}

absl::Status MetaStore::Transaction::WriteLabels(int64_t id, const Labels& labels) {
  Statement del(db_, "DELETE FROM labels WHERE snapshot_id = ?");
  if (!del.status().ok()) return del.status();
  if (absl::Status s = del.Bind(1, id).Run(); !s.ok()) return s;
  for (const auto& [key, value] : labels) {
    if (value.empty()) continue;
    Statement ins(db_, "INSERT INTO labels(snapshot_id, key, value) VALUES(?, ?, ?)");
    if (!ins.status().ok()) return ins.status();
    if (absl::Status s = ins.Bind(1, id).Bind(2, key).Bind(3, value).Run(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> MetaStore::Transaction::ParentChain(int64_t first) {
  std::vector<int64_t> chain;
  for (int64_t id = first; id != 0;) {
    chain.push_back(id);
    Statement q(db_, "SELECT parent_id FROM snapshots WHERE id = ?");
    q.Bind(1, id);
    absl::StatusOr<bool> row = q.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(absl::StrCat("missing parent snapshot id ", id));
    id = q.IsNull(0) ? 0 : q.Int(0);
  }
  return chain;
}

absl::StatusOr<SnapshotRecord> MetaStore::Transaction::Get(const std::string& key) {
  Statement st(db_, absl::StrCat(kSelectColumns, "WHERE s.key = ?"));
  if (!st.status().ok()) return st.status();
  st.Bind(1, key);
  absl::StatusOr<bool> found = st.Step();
  if (!found.ok()) return found.status();
  if (!*found) return absl::NotFoundError(absl::StrCat("snapshot ", key, " does not exist"));
  Row row = ReadRow(st);
  absl::StatusOr<Labels> labels = ReadLabels(row.record.id);
  if (!labels.ok()) return labels.status();
  row.record.info.labels = std::move(*labels);
  if (row.parent_id != 0) {
    absl::StatusOr<std::vector<int64_t>> chain = ParentChain(row.parent_id);
    if (!chain.ok()) return chain.status();
    row.record.parent_ids = std::move(*chain);
  }
  return std::move(row.record);
}

absl::StatusOr<SnapshotRecord> MetaStore::Transaction::Create(SnapshotKind kind,
                                                              const std::string& key,
                                                              const std::string& parent,
                                                              Labels labels, absl::Time now) {
  if (kind != SnapshotKind::kActive && kind != SnapshotKind::kView) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot type ", static_cast<int>(kind),
                     " invalid; only snapshots of type Active or View can be created"));
  }
  int64_t parent_id = 0;
  std::vector<int64_t> parent_ids;
  if (!parent.empty()) {
    absl::StatusOr<SnapshotRecord> p = Get(parent);
    if (absl::IsNotFound(p.status())) {
      return absl::NotFoundError(absl::StrCat("missing parent ", parent));
    }
    if (!p.ok()) return p.status();
    if (p->info.kind != SnapshotKind::kCommitted) {
      return absl::InvalidArgumentError(
          absl::StrCat("parent ", parent, " is not committed snapshot"));
    }
    parent_id = p->id;
    parent_ids.push_back(p->id);
    parent_ids.insert(parent_ids.end(), p->parent_ids.begin(), p->parent_ids.end());
  }
  {
    Statement exists(db_, "SELECT 1 FROM snapshots WHERE key = ?");
    if (!exists.status().ok()) return exists.status();
    absl::StatusOr<bool> row = exists.Bind(1, key).Step();
    if (!row.ok()) return row.status();
    if (*row) return absl::AlreadyExistsError(absl::StrCat("snapshot ", key, " already exists"));
  }
  Statement ins(db_,
                "INSERT INTO snapshots(key, parent_id, kind, created_ns, updated_ns) "
                "VALUES(?, ?, ?, ?, ?)");
  if (!ins.status().ok()) return ins.status();
  ins.Bind(1, key);
  if (parent_id != 0) {
    ins.Bind(2, parent_id);
  } else {
    ins.BindNull(2);
  }
  ins.Bind(3, static_cast<int64_t>(kind)).Bind(4, ToNanos(now)).Bind(5, ToNanos(now));
  if (absl::Status s = ins.Run(); !s.ok()) return s;
  SnapshotRecord record;
  record.id = sqlite3_last_insert_rowid(db_);
  DropEmptyLabels(labels);
  if (absl::Status s = WriteLabels(record.id, labels); !s.ok()) return s;
  record.info = SnapshotInfo{.name = key,
                             .parent = parent,
                             .kind = kind,
                             .created_at = FromNanos(ToNanos(now)),
                             .updated_at = FromNanos(ToNanos(now)),
                             .labels = std::move(labels)};
  record.parent_ids = std::move(parent_ids);
  return record;
}

absl::StatusOr<int64_t> MetaStore::Transaction::CommitActive(const std::string& key,
                                                             const std::string& name,
                                                             const SnapshotUsage& usage,
                                                             Labels labels, absl::Time now) {
  {
    Statement exists(db_, "SELECT 1 FROM snapshots WHERE key = ?");
    if (!exists.status().ok()) return exists.status();
    absl::StatusOr<bool> row = exists.Bind(1, name).Step();
    if (!row.ok()) return row.status();
    if (*row) {
      return absl::AlreadyExistsError(absl::StrCat("committed snapshot ", name, " already exists"));
    }
  }
  absl::StatusOr<SnapshotRecord> active = Get(key);
  if (absl::IsNotFound(active.status())) {
    return absl::NotFoundError(absl::StrCat("failed to get active snapshot ", key));
  }
  if (!active.ok()) return active.status();
  if (active->info.kind != SnapshotKind::kActive) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot ", key, " is not active"));
  }
  Statement upd(db_,
                "UPDATE snapshots SET key = ?, kind = ?, created_ns = ?, updated_ns = ?, "
                "size = ?, inodes = ? WHERE id = ?");
  if (!upd.status().ok()) return upd.status();
  upd.Bind(1, name)
      .Bind(2, static_cast<int64_t>(SnapshotKind::kCommitted))
      .Bind(3, ToNanos(now))
      .Bind(4, ToNanos(now))
      .Bind(5, usage.size)
      .Bind(6, usage.inodes)
      .Bind(7, active->id);
  if (absl::Status s = upd.Run(); !s.ok()) return s;
  DropEmptyLabels(labels);
  if (absl::Status s = WriteLabels(active->id, labels); !s.ok()) return s;
  return active->id;
}

absl::StatusOr<SnapshotRecord> MetaStore::Transaction::Remove(const std::string& key) {
  absl::StatusOr<SnapshotRecord> record = Get(key);
  if (!record.ok()) return record.status();
  {
    Statement child(db_, "SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1");
    if (!child.status().ok()) return child.status();
    absl::StatusOr<bool> row = child.Bind(1, record->id).Step();
    if (!row.ok()) return row.status();
    if (*row) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot remove snapshot with child: ", key));
    }
  }
  Statement del_labels(db_, "DELETE FROM labels WHERE snapshot_id = ?");
  if (!del_labels.status().ok()) return del_labels.status();
  if (absl::Status s = del_labels.Bind(1, record->id).Run(); !s.ok()) return s;
  Statement del(db_, "DELETE FROM snapshots WHERE id = ?");
  if (!del.status().ok()) return del.status();
  if (absl::Status s = del.Bind(1, record->id).Run(); !s.ok()) return s;
  return record;
}

absl::StatusOr<SnapshotInfo> MetaStore::Transaction::UpdateInfo(
    const SnapshotInfo& info, const std::vector<std::string>& paths, absl::Time now) {
  absl::StatusOr<SnapshotRecord> record = Get(info.name);
  if (!record.ok()) return record.status();
  SnapshotInfo updated = std::move(record->info);
  if (paths.empty()) {
    updated.labels = info.labels;
  } else {
    for (const std::string& path : paths) {
      if (absl::StartsWith(path, "labels.")) {
        std::string key = path.substr(7);
        auto it = info.labels.find(key);
        if (it == info.labels.end() || it->second.empty()) {
          updated.labels.erase(key);
        } else {
          updated.labels[key] = it->second;
        }
      } else if (path == "labels") {
        updated.labels = info.labels;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot update ", path, " field on snapshot ", info.name));
      }
    }
  }
  DropEmptyLabels(updated.labels);
  if (absl::Status s = ValidateLabels(updated.labels); !s.ok()) return s;
  updated.updated_at = FromNanos(ToNanos(now));
  Statement upd(db_, "UPDATE snapshots SET updated_ns = ? WHERE id = ?");
  if (!upd.status().ok()) return upd.status();
  if (absl::Status s = upd.Bind(1, ToNanos(now)).Bind(2, record->id).Run(); !s.ok()) return s;
  if (absl::Status s = WriteLabels(record->id, updated.labels); !s.ok()) return s;
  return updated;
}

absl::StatusOr<std::vector<SnapshotRecord>> MetaStore::Transaction::ListAll() {
  Statement st(db_, absl::StrCat(kSelectColumns, "ORDER BY s.id"));
  if (!st.status().ok()) return st.status();
  std::vector<Row> rows;
  while (true) {
    absl::StatusOr<bool> more = st.Step();
    if (!more.ok()) return more.status();
    if (!*more) break;
    rows.push_back(ReadRow(st));
  }
  std::map<int64_t, size_t> by_id;
  for (size_t i = 0; i < rows.size(); ++i) by_id[rows[i].record.id] = i;
  Statement ls(db_, "SELECT snapshot_id, key, value FROM labels");
  if (!ls.status().ok()) return ls.status();
  while (true) {
    absl::StatusOr<bool> more = ls.Step();
    if (!more.ok()) return more.status();
    if (!*more) break;
    auto it = by_id.find(ls.Int(0));
    if (it != by_id.end()) rows[it->second].record.info.labels.emplace(ls.Text(1), ls.Text(2));
  }
  std::vector<SnapshotRecord> out;
  out.reserve(rows.size());
  for (Row& row : rows) {
    for (int64_t p = row.parent_id; p != 0;) {
      row.record.parent_ids.push_back(p);
      auto it = by_id.find(p);
      if (it == by_id.end()) break;
      p = rows[it->second].parent_id;
    }
    out.push_back(std::move(row.record));
  }
  return out;
}

absl::StatusOr<std::set<int64_t>> MetaStore::Transaction::Ids() {
  Statement st(db_, "SELECT id FROM snapshots");
  if (!st.status().ok()) return st.status();
  std::set<int64_t> ids;
  while (true) {
    absl::StatusOr<bool> more = st.Step();
    if (!more.ok()) return more.status();
    if (!*more) break;
    ids.insert(st.Int(0));
  }
  return ids;
}

}  // namespace lazypull
