//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer task that drains every request waiting
//! in its queue into one transaction, commits it with a single fsync
//! (`synchronous=FULL`), and only then answers the requests and publishes
//! their changes to watchers: an acknowledged write is on disk, and
//! concurrent writers share one commit. Reads use a small pool of
//! connections that see committed snapshots.
//!
//! Tables: `objects` (the current state), `changes` (the append-only log of
//! every change with the object before and after it, compacted by age and
//! count) and `meta` (the current and the compacted revision).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::{broadcast, mpsc, oneshot};

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
    /// How often compaction runs.
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
const MAX_BATCH: usize = 512;
/// Changes buffered for live watchers before a slow one is cut off.
const WATCH_BUFFER: usize = 16 * 1024;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS objects (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        rev INTEGER NOT NULL, uid TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS changes (
        rev INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, prev TEXT,
        at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_by_key ON changes (resource, namespace, name, rev)",
    "CREATE INDEX IF NOT EXISTS changes_by_time ON changes (at)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
];

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

struct Shared {
    reads: SqlitePool,
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
    /// writer and compactor tasks.
    pub async fn open(path: &Path, history: History) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // Keep the WAL from staying large after a burst of writes.
            .pragma("journal_size_limit", "67108864");
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut writer)
                .await
                .map_err(backend)?;
        }
        let rev = meta_value(&mut writer, "rev").await?;
        let compacted = meta_value(&mut writer, "compacted").await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            reads,
            rev: AtomicU64::new(rev),
            changes,
        });
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(
            Writer {
                conn: writer,
                shared: shared.clone(),
                history: history.clone(),
                rev,
                compacted,
            }
            .run(queue),
        );
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

    /// Compacts the change log now (as the periodic task does).
    pub async fn compact(&self) -> Result<()> {
        self.write(Op::Compact).await.map(|_| ())
    }

    /// The oldest revision a watch can resume from.
    pub async fn compacted_rev(&self) -> Result<u64> {
        let mut conn = self.shared.reads.acquire().await.map_err(backend)?;
        meta_value(&mut conn, "compacted").await
    }

    async fn do_get(&self, key: &Key) -> Result<Option<Object>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT rev, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
        )
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .fetch_optional(&self.shared.reads)
        .await
        .map_err(backend)?;
        row.map(|(rev, text)| {
            Ok(Object {
                rev: rev as u64,
                value: Arc::new(parse(&text)?),
            })
        })
        .transpose()
    }

    async fn do_list(&self, query: ListQuery) -> Result<ListPage> {
        let mut conn = self.shared.reads.begin().await.map_err(backend)?;
        let now = meta_value(&mut conn, "rev").await?;
        let at = query.at_rev.unwrap_or(now).min(now);
        let mut rows = if at == now {
            current_rows(&mut conn, &query).await?
        } else {
            let compacted = meta_value(&mut conn, "compacted").await?;
            if at < compacted {
                return Err(StoreError::Compacted {
                    requested: at,
                    compacted,
                });
            }
            rows_at(&mut conn, &query, at).await?
        };
        conn.commit().await.map_err(backend)?;
        let more = query.limit.is_some_and(|limit| rows.len() > limit);
        if let Some(limit) = query.limit {
            rows.truncate(limit);
        }
        let objects = rows
            .into_iter()
            .map(|(_, _, text)| parse(&text).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListPage {
            objects,
            rev: at,
            more,
        })
    }

    async fn do_changes_since(&self, rev: u64, resource: Option<String>) -> Result<Vec<Change>> {
        let mut conn = self.shared.reads.begin().await.map_err(backend)?;
        let compacted = meta_value(&mut conn, "compacted").await?;
        if rev < compacted {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted,
            });
        }
        let sql = format!(
            "SELECT rev, resource, namespace, name, kind, value, prev FROM changes
             WHERE rev > ? {} ORDER BY rev",
            if resource.is_some() {
                "AND resource = ?"
            } else {
                ""
            }
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(rev as i64);
        if let Some(resource) = &resource {
            q = q.bind(resource);
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(backend)?;
        conn.commit().await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.get(4);
                let value: String = row.get(5);
                let prev: Option<String> = row.get(6);
                Ok(Change {
                    rev: row.get::<i64, _>(0) as u64,
                    key: Key::new(
                        row.get::<String, _>(1),
                        row.get::<String, _>(2),
                        row.get::<String, _>(3),
                    ),
                    kind: ChangeKind::from_str(&kind).ok_or_else(|| backend("bad change kind"))?,
                    object: Arc::new(parse(&value)?),
                    object_json: Bytes::from(value),
                    prev: prev.as_deref().map(parse).transpose()?.map(Arc::new),
                })
            })
            .collect()
    }
}

async fn meta_value(conn: &mut SqliteConnection, key: &str) -> Result<u64> {
    let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    Ok(value.unwrap_or(0) as u64)
}

type Row3 = (String, String, String);

fn scope_sql(query: &ListQuery, table: &str) -> String {
    let mut sql = format!("{table}.resource = ?");
    if query.namespace.is_some() {
        sql.push_str(&format!(" AND {table}.namespace = ?"));
    }
    sql
}

/// The live objects of a list, in key order, one more than the limit.
async fn current_rows(conn: &mut SqliteConnection, query: &ListQuery) -> Result<Vec<Row3>> {
    let mut sql = format!(
        "SELECT namespace, name, value FROM objects WHERE {}",
        scope_sql(query, "objects")
    );
    if query.after.is_some() {
        sql.push_str(" AND (namespace, name) > (?, ?)");
    }
    sql.push_str(" ORDER BY namespace, name");
    if query.limit.is_some() {
        sql.push_str(" LIMIT ?");
    }
    let mut q = sqlx::query_as::<_, Row3>(AssertSqlSafe(sql)).bind(&query.resource);
    if let Some(ns) = &query.namespace {
        q = q.bind(ns);
    }
    if let Some((ns, name)) = &query.after {
        q = q.bind(ns).bind(name);
    }
    if let Some(limit) = query.limit {
        q = q.bind(limit as i64 + 1);
    }
    q.fetch_all(conn).await.map_err(backend)
}

/// The objects of a list as they were at revision `at`: live objects not
/// changed since, plus, for every object changed since, the state before
/// its first change after `at` (unless that change created it).
async fn rows_at(conn: &mut SqliteConnection, query: &ListQuery, at: u64) -> Result<Vec<Row3>> {
    let sql = format!(
        "SELECT namespace, name, value FROM objects WHERE {} AND rev <= ?",
        scope_sql(query, "objects")
    );
    let mut q = sqlx::query_as::<_, Row3>(AssertSqlSafe(sql)).bind(&query.resource);
    if let Some(ns) = &query.namespace {
        q = q.bind(ns);
    }
    let mut rows = q
        .bind(at as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;

    let sql = format!(
        "SELECT c.namespace, c.name, c.prev FROM changes c JOIN (
             SELECT namespace, name, MIN(rev) AS first FROM changes
             WHERE {} AND rev > ? GROUP BY namespace, name) f ON c.rev = f.first
         WHERE c.kind != 'ADDED'",
        scope_sql(query, "changes")
    );
    let mut q = sqlx::query_as::<_, Row3>(AssertSqlSafe(sql)).bind(&query.resource);
    if let Some(ns) = &query.namespace {
        q = q.bind(ns);
    }
    rows.extend(
        q.bind(at as i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?,
    );

    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if let Some((ns, name)) = &query.after {
        rows.retain(|(n, m, _)| (n, m) > (ns, name));
    }
    if let Some(limit) = query.limit {
        rows.truncate(limit + 1);
    }
    Ok(rows)
}

struct Writer {
    conn: SqliteConnection,
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

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn commit_batch(&mut self, batch: Vec<WriteRequest>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let result = self.apply_all(&batch, &mut outcomes).await;
        match result {
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
    /// new revision once committed. A request that fails a precondition
    /// gets its error and writes nothing; a storage error fails the batch.
    async fn apply_all(
        &mut self,
        batch: &[WriteRequest],
        outcomes: &mut Vec<Result<Applied>>,
    ) -> Result<(u64, u64)> {
        let mut tx = self.conn.begin().await.map_err(backend)?;
        let mut rev = self.rev;
        let mut compacted = self.compacted;
        let now = unix_now();
        for request in batch {
            let outcome = match &request.op {
                Op::Create(key, value) => create(&mut tx, key, value, rev + 1, now).await,
                Op::Update(key, value, pre) => update(&mut tx, key, value, pre, rev + 1, now).await,
                Op::Delete(key, pre) => delete(&mut tx, key, pre, rev + 1, now).await,
                Op::Compact => compact(&mut tx, &self.history, rev, now).await.map(|upto| {
                    compacted = upto;
                    Applied {
                        object: None,
                        change: None,
                    }
                }),
            };
            match outcome {
                Err(StoreError::Backend(message)) => return Err(StoreError::Backend(message)),
                Ok(applied) => {
                    if applied.change.is_some() {
                        rev += 1;
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
            compacted = compact(&mut tx, &self.history, rev, now).await?;
        }
        if rev != self.rev {
            sqlx::query("INSERT INTO meta (key, value) VALUES ('rev', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                .bind(rev as i64)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok((rev, compacted))
    }
}

async fn current(conn: &mut SqliteConnection, key: &Key) -> Result<Option<(u64, String, String)>> {
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT rev, uid, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
    )
    .bind(&key.resource)
    .bind(&key.namespace)
    .bind(&key.name)
    .fetch_optional(conn)
    .await
    .map_err(backend)?;
    Ok(row.map(|(rev, uid, value)| (rev as u64, uid, value)))
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

/// What one change writes to the log.
struct LogEntry<'a> {
    key: &'a Key,
    kind: ChangeKind,
    rev: u64,
    text: &'a str,
    prev: Option<&'a str>,
}

async fn log_change(conn: &mut SqliteConnection, entry: LogEntry<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO changes (rev, resource, namespace, name, kind, value, prev, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.rev as i64)
    .bind(&entry.key.resource)
    .bind(&entry.key.namespace)
    .bind(&entry.key.name)
    .bind(entry.kind.as_str())
    .bind(entry.text)
    .bind(entry.prev)
    .bind(now)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(())
}

fn applied(
    key: &Key,
    kind: ChangeKind,
    rev: u64,
    value: Value,
    text: String,
    prev: Option<Value>,
) -> Applied {
    let value = Arc::new(value);
    Applied {
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
            prev: prev.map(Arc::new),
        }),
    }
}

async fn create(
    conn: &mut SqliteConnection,
    key: &Key,
    value: &Value,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    if current(conn, key).await?.is_some() {
        return Err(StoreError::AlreadyExists);
    }
    let value = with_rev(value.clone(), rev);
    let text = serde_json::to_string(&value).map_err(backend)?;
    sqlx::query("INSERT INTO objects (resource, namespace, name, rev, uid, value) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(rev as i64)
        .bind(uid_of(&value))
        .bind(&text)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let kind = ChangeKind::Added;
    log_change(
        conn,
        LogEntry {
            key,
            kind,
            rev,
            text: &text,
            prev: None,
        },
        now,
    )
    .await?;
    Ok(applied(key, kind, rev, value, text, None))
}

async fn update(
    conn: &mut SqliteConnection,
    key: &Key,
    value: &Value,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let (old_rev, uid, old_text) = current(conn, key).await?.ok_or(StoreError::NotFound)?;
    check(pre, old_rev, &uid, &old_text)?;
    let value = with_rev(value.clone(), rev);
    let text = serde_json::to_string(&value).map_err(backend)?;
    sqlx::query("UPDATE objects SET rev = ?, uid = ?, value = ? WHERE resource = ? AND namespace = ? AND name = ?")
        .bind(rev as i64)
        .bind(uid_of(&value))
        .bind(&text)
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let kind = ChangeKind::Modified;
    log_change(
        conn,
        LogEntry {
            key,
            kind,
            rev,
            text: &text,
            prev: Some(&old_text),
        },
        now,
    )
    .await?;
    Ok(applied(
        key,
        kind,
        rev,
        value,
        text,
        Some(parse(&old_text)?),
    ))
}

async fn delete(
    conn: &mut SqliteConnection,
    key: &Key,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let (old_rev, uid, old_text) = current(conn, key).await?.ok_or(StoreError::NotFound)?;
    check(pre, old_rev, &uid, &old_text)?;
    sqlx::query("DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?")
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let old = parse(&old_text)?;
    // Watchers see the deleted object at the deletion's revision.
    let last = with_rev(old.clone(), rev);
    let text = serde_json::to_string(&last).map_err(backend)?;
    let kind = ChangeKind::Deleted;
    log_change(
        conn,
        LogEntry {
            key,
            kind,
            rev,
            text: &text,
            prev: Some(&old_text),
        },
        now,
    )
    .await?;
    Ok(applied(key, kind, rev, last, text, Some(old)))
}

/// Drops changes older than the history's age, and beyond its count;
/// returns the revision compacted up to.
async fn compact(
    conn: &mut SqliteConnection,
    history: &History,
    rev: u64,
    now: i64,
) -> Result<u64> {
    let cutoff = now - history.max_age.as_secs() as i64;
    let by_age: Option<i64> = sqlx::query_scalar("SELECT MAX(rev) FROM changes WHERE at < ?")
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    let by_count = rev.saturating_sub(history.max_entries);
    let upto = by_count.max(by_age.unwrap_or(0) as u64);
    let compacted = meta_value(conn, "compacted").await?;
    if upto > compacted {
        sqlx::query("DELETE FROM changes WHERE rev <= ?")
            .bind(upto as i64)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('compacted', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(upto as i64)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        return Ok(upto);
    }
    Ok(compacted)
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
        async move { self.do_get(&key).await }.boxed()
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<ListPage>> {
        self.do_list(query).boxed()
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
        self.do_changes_since(rev, resource).boxed()
    }

    fn current_rev(&self) -> u64 {
        self.shared.rev.load(Ordering::Acquire)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.shared.changes.subscribe()
    }
}
