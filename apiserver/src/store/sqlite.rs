//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that drains every request
//! waiting in its queue into one transaction, commits it with a single
//! fsync (`synchronous=FULL`), and only then publishes the changes to
//! watchers and answers the requests: an acknowledged write is on disk, and
//! concurrent writers share one commit. Reads run on blocking threads over a
//! small pool of read-only connections that see committed snapshots.
//!
//! The writer owns its connection on a dedicated thread (rusqlite, prepared
//! statements cached) rather than going through an async driver: with a
//! driver that hops to a worker thread for every statement, those wake-ups
//! cost more than SQLite itself (measured: knit-bench, creates/s).
//!
//! Tables: `objects` (the current state), `changes` (the append-only log of
//! every change with the object before and after it, compacted by age and
//! count) and `meta` (the current and the compacted revision).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
    params_from_iter,
};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use super::{
    Change, ChangeKind, Key, ListPage, ListQuery, Object, Preconditions, Result, Store, StoreError,
};

/// How much change history the store keeps for watches and paginated lists.
#[derive(Debug, Clone)]
pub struct History {
    /// Changes older than this are compacted.
    pub max_age: Duration,
    /// At most this many changes are kept (give or take a tenth: the
    /// writer compacts when the log is a tenth over).
    pub max_entries: u64,
    /// How often compaction by age runs.
    pub interval: Duration,
}

impl Default for History {
    fn default() -> Self {
        // kube-apiserver compacts etcd every 5 minutes.
        Self {
            max_age: Duration::from_secs(300),
            max_entries: 10_000,
            interval: Duration::from_secs(30),
        }
    }
}

/// Most requests one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 1024;
/// Changes buffered for live watchers before a slow one is cut off.
const WATCH_BUFFER: usize = 16 * 1024;
/// Reads that run at once, each on its own pooled connection.
const READERS: usize = 4;

/// The change log needs no index beyond its revision: every query on it
/// reads a range of revisions (watch replay, lists at a past revision,
/// compaction), and each extra index costs every write.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS objects (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        rev INTEGER NOT NULL, uid TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS changes (
        rev INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, prev TEXT,
        at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

enum Op {
    Create(Key, Value),
    Update(Key, Value, Preconditions),
    Delete(Key, Preconditions),
    Compact,
}

struct WriteRequest {
    op: Op,
    reply: oneshot::Sender<Result<Option<Object>>>,
}

/// Read-only connections, opened as needed and kept for reuse; the
/// permits bound how many reads run at once, so that every read finds an
/// open connection once the pool is warm.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    fn with<T>(&self, read: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().expect("reader pool lock").pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
                conn.busy_timeout(Duration::from_secs(10))
                    .map_err(backend)?;
                conn.execute_batch("PRAGMA mmap_size = 268435456;")
                    .map_err(backend)?;
                conn
            }
        };
        let result = read(&mut conn);
        self.idle.lock().expect("reader pool lock").push(conn);
        result
    }
}

struct Shared {
    readers: Readers,
    rev: AtomicU64,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The SQLite store. Cloning shares it.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteRequest>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("rev", &self.shared.rev.load(Ordering::Acquire))
            .finish()
    }
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(backend)
}

fn with_rev(mut value: Value, rev: u64) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    value
}

fn uid_of(value: &Value) -> &str {
    value["metadata"]["uid"].as_str().unwrap_or_default()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its
    /// writer thread and compactor task.
    pub async fn open(path: &Path, history: History) -> Result<Self> {
        let owned = path.to_path_buf();
        let (conn, rev, compacted) = tokio::task::spawn_blocking(move || open_writer(&owned))
            .await
            .map_err(backend)??;
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            readers: Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            },
            rev: AtomicU64::new(rev),
            changes,
        });
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            history: history.clone(),
            rev,
            compacted,
        };
        std::thread::Builder::new()
            .name("knit-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(backend)?;
        let (owned, alive) = (path.to_path_buf(), Arc::downgrade(&shared));
        std::thread::Builder::new()
            .name("knit-store-ckpt".into())
            .spawn(move || checkpoint_continually(&owned, alive))
            .map_err(backend)?;
        let store = Self { shared, writes };
        tokio::spawn(compact_periodically(
            store.writes.downgrade(),
            history.interval,
        ));
        Ok(store)
    }

    async fn write(&self, op: Op) -> Result<Option<Object>> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| backend("the store's writer has stopped"))?;
        answer
            .await
            .map_err(|_| backend("the store's writer dropped a request"))?
    }

    async fn write_object(&self, op: Op) -> Result<Object> {
        self.write(op)
            .await?
            .ok_or_else(|| backend("write returned no object"))
    }

    /// Runs a read on a blocking thread with a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .shared
            .readers
            .permits
            .acquire()
            .await
            .map_err(backend)?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.readers.with(read))
            .await
            .map_err(backend)?
    }

    /// Compacts the change log now (as the periodic task does).
    pub async fn compact(&self) -> Result<()> {
        self.write(Op::Compact).await.map(|_| ())
    }

    /// The oldest revision a watch can resume from.
    pub async fn compacted_rev(&self) -> Result<u64> {
        self.read(|conn| meta_value(conn, "compacted")).await
    }
}

fn open_writer(path: &Path) -> Result<(Connection, u64, u64)> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    // A commit fsyncs the WAL (`synchronous = FULL`). Checkpoints run on
    // their own thread (`checkpoint_continually`), off the writer's path.
    // After a checkpoint the WAL is reused in place, and cut back to 64 MiB
    // at most: growing a file again costs the filesystem block allocations
    // on every write. The cache holds the B-tree pages a write looks up.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -8192;
         PRAGMA mmap_size = 268435456;",
    )
    .map_err(backend)?;
    conn.execute_batch(SCHEMA).map_err(backend)?;
    let rev = meta_value(&conn, "rev")?;
    let compacted = meta_value(&conn, "compacted")?;
    Ok((conn, rev, compacted))
}

fn meta_value(conn: &Connection, key: &str) -> Result<u64> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(backend)?;
    Ok(value.unwrap_or(0) as u64)
}

fn set_meta(conn: &Connection, key: &str, value: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?, ?)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut stmt| stmt.execute(params![key, value as i64]))
    .map_err(backend)?;
    Ok(())
}

fn get(conn: &Connection, key: &Key) -> Result<Option<Object>> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT rev, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![key.resource, key.namespace, key.name], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(backend)?;
    row.map(|(rev, text)| {
        Ok(Object {
            rev: rev as u64,
            value: Arc::new(parse(&text)?),
        })
    })
    .transpose()
}

fn list(conn: &mut Connection, query: &ListQuery) -> Result<ListPage> {
    let tx = conn.transaction().map_err(backend)?;
    let now = meta_value(&tx, "rev")?;
    let at = query.at_rev.unwrap_or(now).min(now);
    let mut rows = if at == now {
        current_rows(&tx, query)?
    } else {
        let compacted = meta_value(&tx, "compacted")?;
        if at < compacted {
            return Err(StoreError::Compacted {
                requested: at,
                compacted,
            });
        }
        rows_at(&tx, query, at)?
    };
    tx.commit().map_err(backend)?;
    let more = query.limit.is_some_and(|limit| rows.len() > limit);
    if let Some(limit) = query.limit {
        rows.truncate(limit);
    }
    let objects = rows
        .into_iter()
        .map(|row| parse(&row.value).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(ListPage {
        objects,
        rev: at,
        more,
    })
}

fn changes_since(conn: &mut Connection, rev: u64, resource: Option<&str>) -> Result<Vec<Change>> {
    let tx = conn.transaction().map_err(backend)?;
    let compacted = meta_value(&tx, "compacted")?;
    if rev < compacted {
        return Err(StoreError::Compacted {
            requested: rev,
            compacted,
        });
    }
    let sql = format!(
        "SELECT rev, resource, namespace, name, kind, value, prev FROM changes
         WHERE rev > ?1 {} ORDER BY rev",
        if resource.is_some() {
            "AND resource = ?2"
        } else {
            ""
        }
    );
    let mut stmt = tx.prepare(&sql).map_err(backend)?;
    let mut params: Vec<rusqlite::types::Value> = vec![(rev as i64).into()];
    if let Some(resource) = resource {
        params.push(resource.to_string().into());
    }
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                Key::new(
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ),
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(backend)?;
    drop(stmt);
    tx.commit().map_err(backend)?;
    rows.into_iter()
        .map(|(rev, key, kind, value, prev)| {
            Ok(Change {
                rev: rev as u64,
                key,
                kind: ChangeKind::from_str(&kind).ok_or_else(|| backend("bad change kind"))?,
                object: Arc::new(parse(&value)?),
                object_json: Bytes::from(value),
                prev: prev.as_deref().map(parse).transpose()?.map(Arc::new),
            })
        })
        .collect()
}

/// One row of a list: its place in key order and its JSON.
struct ListRow {
    namespace: String,
    name: String,
    value: String,
}

/// The WHERE clause and parameters that scope a list to its resource and
/// namespace.
fn scope(query: &ListQuery, table: &str) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("{table}.resource = ?");
    let mut params: Vec<rusqlite::types::Value> = vec![query.resource.clone().into()];
    if let Some(ns) = &query.namespace {
        sql.push_str(&format!(" AND {table}.namespace = ?"));
        params.push(ns.clone().into());
    }
    (sql, params)
}

fn query_rows(
    conn: &Connection,
    sql: &str,
    params: Vec<rusqlite::types::Value>,
) -> Result<Vec<ListRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    stmt.query_map(params_from_iter(params), |row| {
        Ok(ListRow {
            namespace: row.get(0)?,
            name: row.get(1)?,
            value: row.get(2)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(backend)
}

/// The live objects of a list, in key order, one more than the limit.
fn current_rows(conn: &Connection, query: &ListQuery) -> Result<Vec<ListRow>> {
    let (scope, mut params) = scope(query, "objects");
    let mut sql = format!("SELECT namespace, name, value FROM objects WHERE {scope}");
    if let Some((ns, name)) = &query.after {
        sql.push_str(" AND (namespace, name) > (?, ?)");
        params.push(ns.clone().into());
        params.push(name.clone().into());
    }
    sql.push_str(" ORDER BY namespace, name");
    if let Some(limit) = query.limit {
        sql.push_str(" LIMIT ?");
        params.push((limit as i64 + 1).into());
    }
    query_rows(conn, &sql, params)
}

/// The objects of a list as they were at revision `at`: live objects not
/// changed since, plus, for every object changed since, the state before
/// its first change after `at` (unless that change created it).
fn rows_at(conn: &Connection, query: &ListQuery, at: u64) -> Result<Vec<ListRow>> {
    let (scope_objects, mut params) = scope(query, "objects");
    params.push((at as i64).into());
    let mut rows = query_rows(
        conn,
        &format!("SELECT namespace, name, value FROM objects WHERE {scope_objects} AND rev <= ?"),
        params,
    )?;
    let (scope_changes, mut params) = scope(query, "changes");
    params.push((at as i64).into());
    rows.extend(query_rows(
        conn,
        &format!(
            "SELECT c.namespace, c.name, c.prev FROM changes c JOIN (
                 SELECT namespace, name, MIN(rev) AS first FROM changes
                 WHERE {scope_changes} AND rev > ? GROUP BY namespace, name) f ON c.rev = f.first
             WHERE c.kind != 'ADDED'"
        ),
        params,
    )?);
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if let Some((ns, name)) = &query.after {
        rows.retain(|row| (&row.namespace, &row.name) > (ns, name));
    }
    if let Some(limit) = query.limit {
        rows.truncate(limit + 1);
    }
    Ok(rows)
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    history: History,
    /// The last committed revision.
    rev: u64,
    /// Revisions up to this one are compacted.
    compacted: u64,
}

/// What one applied operation leaves behind until the batch commits.
struct Applied {
    object: Option<Object>,
    change: Option<Change>,
}

const NOTHING: Applied = Applied {
    object: None,
    change: None,
};

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            // Everything that queued up while the last batch committed goes
            // into this one.
            while batch.len() < MAX_BATCH
                && let Ok(next) = queue.try_recv()
            {
                batch.push(next);
            }
            self.commit_batch(std::mem::take(&mut batch));
        }
    }

    fn commit_batch(&mut self, batch: Vec<WriteRequest>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        match self.apply_all(&batch, &mut outcomes) {
            Ok((rev, compacted)) => {
                self.rev = rev;
                self.compacted = compacted;
                self.shared.rev.store(rev, Ordering::Release);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let outcome = outcome.map(|applied| {
                        if let Some(change) = applied.change {
                            // No receivers is not an error: nobody is watching.
                            let _ = self.shared.changes.send(Arc::new(change));
                        }
                        applied.object
                    });
                    let _ = request.reply.send(outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store transaction failed");
                for request in batch {
                    let _ = request.reply.send(Err(backend(&err)));
                }
            }
        }
    }

    /// Applies every request of a batch in one transaction; returns the
    /// new and the compacted revision once committed. A request that fails
    /// a precondition gets its error and writes nothing; a storage error
    /// fails the whole batch.
    fn apply_all(
        &mut self,
        batch: &[WriteRequest],
        outcomes: &mut Vec<Result<Applied>>,
    ) -> Result<(u64, u64)> {
        // IMMEDIATE: take the write lock up front (waiting out a WAL reset)
        // rather than failing to upgrade a read snapshot that went stale.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let mut rev = self.rev;
        let mut compacted = self.compacted;
        let now = unix_now();
        for request in batch {
            let next = rev + 1;
            let outcome = match &request.op {
                Op::Create(key, value) => create(&tx, key, value, next, now),
                Op::Update(key, value, pre) => update(&tx, key, value, pre, next, now),
                Op::Delete(key, pre) => delete(&tx, key, pre, next, now),
                Op::Compact => compact(&tx, &self.history, rev, now).map(|upto| {
                    compacted = upto;
                    NOTHING
                }),
            };
            match outcome {
                Err(StoreError::Backend(message)) => return Err(StoreError::Backend(message)),
                Ok(applied) => {
                    if applied.change.is_some() {
                        rev = next;
                    }
                    outcomes.push(Ok(applied));
                }
                Err(err) => outcomes.push(Err(err)),
            }
        }
        // Compact by count as the log grows, so that its size does not
        // depend on how often the periodic compaction runs.
        let slack = self.history.max_entries / 10 + 1;
        if rev.saturating_sub(compacted) > self.history.max_entries + slack {
            compacted = compact(&tx, &self.history, rev, now)?;
        }
        if rev != self.rev {
            set_meta(&tx, "rev", rev)?;
        }
        tx.commit().map_err(backend)?;
        Ok((rev, compacted))
    }
}

/// The stored row of a key: its revision, uid and JSON.
fn current(conn: &Connection, key: &Key) -> Result<Option<(u64, String, String)>> {
    conn.prepare_cached(
        "SELECT rev, uid, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![key.resource, key.namespace, key.name], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
        })
        .optional()
    })
    .map_err(backend)
}

/// Checks preconditions against the stored row; on a mismatch returns the
/// stored object in the error.
fn check(pre: &Preconditions, rev: u64, uid: &str, text: &str) -> Result<()> {
    let rev_ok = pre.rev.is_none_or(|want| want == rev);
    let uid_ok = pre.uid.as_deref().is_none_or(|want| want == uid);
    if rev_ok && uid_ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(Object {
            rev,
            value: Arc::new(parse(text)?),
        }))
    }
}

/// Writes the object's row and its entry in the change log, and builds
/// what the write answers and publishes.
fn record(
    conn: &Transaction<'_>,
    key: &Key,
    kind: ChangeKind,
    rev: u64,
    value: Value,
    prev: Option<String>,
    now: i64,
) -> Result<Applied> {
    let text = serde_json::to_string(&value).map_err(backend)?;
    let row = match kind {
        ChangeKind::Added => conn
            .prepare_cached(
                "INSERT INTO objects (resource, namespace, name, rev, uid, value) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .and_then(|mut s| {
                s.execute(params![key.resource, key.namespace, key.name, rev as i64, uid_of(&value), text])
            }),
        ChangeKind::Modified => conn
            .prepare_cached(
                "UPDATE objects SET rev = ?, uid = ?, value = ? WHERE resource = ? AND namespace = ? AND name = ?",
            )
            .and_then(|mut s| {
                s.execute(params![rev as i64, uid_of(&value), text, key.resource, key.namespace, key.name])
            }),
        ChangeKind::Deleted => conn
            .prepare_cached("DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?")
            .and_then(|mut s| s.execute(params![key.resource, key.namespace, key.name])),
    };
    row.map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO changes (rev, resource, namespace, name, kind, value, prev, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rev as i64,
            key.resource,
            key.namespace,
            key.name,
            kind.as_str(),
            text,
            prev,
            now
        ])
    })
    .map_err(backend)?;
    let prev = prev.as_deref().map(parse).transpose()?.map(Arc::new);
    let value = Arc::new(value);
    Ok(Applied {
        object: Some(Object {
            rev,
            value: value.clone(),
        }),
        change: Some(Change {
            rev,
            key: key.clone(),
            kind,
            object: value,
            object_json: Bytes::from(text),
            prev,
        }),
    })
}

fn create(conn: &Transaction<'_>, key: &Key, value: &Value, rev: u64, now: i64) -> Result<Applied> {
    if current(conn, key)?.is_some() {
        return Err(StoreError::AlreadyExists);
    }
    let value = with_rev(value.clone(), rev);
    record(conn, key, ChangeKind::Added, rev, value, None, now)
}

fn update(
    conn: &Transaction<'_>,
    key: &Key,
    value: &Value,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let (old_rev, uid, old_text) = current(conn, key)?.ok_or(StoreError::NotFound)?;
    check(pre, old_rev, &uid, &old_text)?;
    let value = with_rev(value.clone(), rev);
    record(
        conn,
        key,
        ChangeKind::Modified,
        rev,
        value,
        Some(old_text),
        now,
    )
}

fn delete(
    conn: &Transaction<'_>,
    key: &Key,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let (old_rev, uid, old_text) = current(conn, key)?.ok_or(StoreError::NotFound)?;
    check(pre, old_rev, &uid, &old_text)?;
    // Watchers see the deleted object at the deletion's revision.
    let last = with_rev(parse(&old_text)?, rev);
    record(
        conn,
        key,
        ChangeKind::Deleted,
        rev,
        last,
        Some(old_text),
        now,
    )
}

/// Drops changes older than the history's age, and beyond its count;
/// returns the revision compacted up to.
fn compact(conn: &Transaction<'_>, history: &History, rev: u64, now: i64) -> Result<u64> {
    let cutoff = now - history.max_age.as_secs() as i64;
    let by_age: Option<i64> = conn
        .prepare_cached("SELECT MAX(rev) FROM changes WHERE at < ?")
        .and_then(|mut s| s.query_row([cutoff], |row| row.get(0)))
        .map_err(backend)?;
    let by_count = rev.saturating_sub(history.max_entries);
    let upto = by_count.max(by_age.unwrap_or(0) as u64);
    let compacted = meta_value(conn, "compacted")?;
    if upto <= compacted {
        return Ok(compacted);
    }
    conn.prepare_cached("DELETE FROM changes WHERE rev <= ?")
        .and_then(|mut s| s.execute([upto as i64]))
        .map_err(backend)?;
    set_meta(conn, "compacted", upto)?;
    Ok(upto)
}

/// How often committed WAL frames are copied back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// A WAL longer than this (64 MiB of 4 KiB pages) is reset by force.
const WAL_FRAMES_LIMIT: i64 = 16 * 1024;

/// Copies the WAL back into the database file as the writer goes, until the
/// store is dropped. Passive checkpoints never block the writer or readers.
fn checkpoint_continually(path: &Path, alive: std::sync::Weak<Shared>) {
    let conn = match Connection::open(path)
        .and_then(|conn| conn.busy_timeout(Duration::from_secs(10)).map(|()| conn))
    {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "cannot open the checkpoint connection; the WAL will not be checkpointed");
            return;
        }
    };
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        // (busy, frames in the WAL, frames checkpointed)
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        });
        match passive {
            // A WAL that readers kept from being reused is reset by force,
            // briefly holding the writer: the WAL's size stays bounded.
            Ok(frames) if frames > WAL_FRAMES_LIMIT => {
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %err, "WAL reset failed");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
        }
    }
}

async fn compact_periodically(writes: mpsc::WeakSender<WriteRequest>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(writes) = writes.upgrade() else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        if writes
            .send(WriteRequest {
                op: Op::Compact,
                reply,
            })
            .await
            .is_err()
        {
            return;
        }
        drop(writes);
        if let Ok(Err(err)) = answer.await {
            tracing::warn!(error = %err, "compaction failed");
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &Key) -> BoxFuture<'_, Result<Option<Object>>> {
        let key = key.clone();
        self.read(move |conn| get(conn, &key)).boxed()
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<ListPage>> {
        self.read(move |conn| list(conn, &query)).boxed()
    }

    fn create(&self, key: Key, value: Value) -> BoxFuture<'_, Result<Object>> {
        self.write_object(Op::Create(key, value)).boxed()
    }

    fn update(&self, key: Key, value: Value, pre: Preconditions) -> BoxFuture<'_, Result<Object>> {
        self.write_object(Op::Update(key, value, pre)).boxed()
    }

    fn delete(&self, key: Key, pre: Preconditions) -> BoxFuture<'_, Result<Object>> {
        self.write_object(Op::Delete(key, pre)).boxed()
    }

    fn changes_since(
        &self,
        rev: u64,
        resource: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<Change>>> {
        self.read(move |conn| changes_since(conn, rev, resource.as_deref()))
            .boxed()
    }

    fn current_rev(&self) -> u64 {
        self.shared.rev.load(Ordering::Acquire)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.shared.changes.subscribe()
    }
}
