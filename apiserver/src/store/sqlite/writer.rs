//! The writer thread (group commit of the change log, compaction), the
//! log's checkpoint thread, and opening the log.

use std::collections::{HashMap, HashSet};
use std::mem::take;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::folder::FolderMessage;
use super::read::{meta_value, object_row};
use super::{History, Pending, SCHEMA, Shared, backend, parse, set_meta};
use crate::store::{Change, ChangeKind, Key, Object, Preconditions, Result, StoreError};

/// Most requests one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 1024;
/// How often committed WAL frames are copied back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// A WAL larger than this is reset by the writer.
const WAL_BYTES_LIMIT: u64 = 64 << 20;

pub(super) enum Op {
    Create(Key, Value),
    Update(Key, Value, Preconditions),
    Delete(Key, Preconditions),
    /// Compact the log by age and count (up to what is folded).
    Compact,
}

pub(super) struct WriteRequest {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Option<Object>>>,
}

/// The writer's connection and where the log stands.
pub(super) struct Opened {
    pub(super) conn: Connection,
    wal_path: PathBuf,
    pub(super) rev: u64,
    compacted: u64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Opens the writer's connection to the log.
pub(super) fn open(path: &Path) -> Result<Opened> {
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
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    Ok(Opened {
        conn,
        wal_path: wal_path.into(),
        rev,
        compacted,
    })
}

pub(super) struct Writer {
    conn: Connection,
    /// Reads `objects` for keys with no unfolded change.
    objects: Connection,
    /// Every key that exists now: a create checks it here, not in `objects`.
    live: HashSet<Key>,
    shared: Arc<Shared>,
    folder: Sender<FolderMessage>,
    history: History,
    /// The last committed revision.
    rev: u64,
    /// Revisions up to this one are compacted.
    compacted: u64,
    wal_path: PathBuf,
}

/// What one applied operation leaves behind until the batch commits.
struct Applied {
    object: Option<Object>,
    change: Option<Arc<Change>>,
}

/// What a committed batch changed.
struct Committed {
    rev: u64,
    compacted: u64,
}

impl Writer {
    /// Starts the writer thread; returns the queue to it.
    pub(super) fn start(
        opened: Opened,
        objects: Connection,
        shared: Arc<Shared>,
        folder: Sender<FolderMessage>,
        history: History,
    ) -> Result<mpsc::Sender<WriteRequest>> {
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        let live = live_keys(&objects)?;
        let writer = Writer {
            conn: opened.conn,
            objects,
            live,
            shared,
            folder,
            history,
            rev: opened.rev,
            compacted: opened.compacted,
            wal_path: opened.wal_path,
        };
        std::thread::Builder::new()
            .name("knit-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(backend)?;
        Ok(writes)
    }

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
            self.bound_wal();
        }
    }

    /// Under steady writes the WAL may never be fully checkpointed at the
    /// moment a write starts, and so never start over: past its limit the
    /// writer resets it (copying what the passive checkpoints left, then
    /// truncating), so that its size stays bounded.
    fn bound_wal(&mut self) {
        let size = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        if size > WAL_BYTES_LIMIT
            && let Err(err) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %err, "WAL reset failed");
        }
    }

    fn commit_batch(&mut self, mut batch: Vec<WriteRequest>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        match self.apply_all(&mut batch, &mut outcomes) {
            Ok(committed) => {
                self.rev = committed.rev;
                self.compacted = committed.compacted;
                let changes: Vec<Arc<Change>> = outcomes
                    .iter()
                    .flatten()
                    .filter_map(|applied| applied.change.clone())
                    .collect();
                {
                    let mut pending = self.shared.pending.write().expect("pending lock");
                    for change in &changes {
                        pending.insert(change.key.clone(), change.clone());
                    }
                }
                for change in &changes {
                    match change.kind {
                        ChangeKind::Added => self.live.insert(change.key.clone()),
                        ChangeKind::Deleted => self.live.remove(&change.key),
                        ChangeKind::Modified => true,
                    };
                }
                // After the pending map has them: the folder drops them from
                // it once folded.
                if !changes.is_empty() {
                    let _ = self.folder.send(FolderMessage::Committed(changes));
                }
                self.shared.rev.store(committed.rev, Ordering::Release);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let outcome = outcome.map(|applied| {
                        if let Some(change) = applied.change {
                            // No receivers is not an error: nobody is watching.
                            let _ = self.shared.changes.send(change);
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

    /// Applies every request of a batch in one transaction, compacting
    /// when due. A request that fails a precondition gets its
    /// error and writes nothing; a storage error fails the whole batch.
    fn apply_all(
        &mut self,
        batch: &mut [WriteRequest],
        outcomes: &mut Vec<Result<Applied>>,
    ) -> Result<Committed> {
        // IMMEDIATE: take the write lock up front (waiting out a WAL reset)
        // rather than failing to upgrade a read snapshot that went stale.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let pending = self.shared.pending.read().expect("pending lock");
        let mut view = View {
            pending: &pending,
            batch: HashMap::new(),
            objects: &self.objects,
            live: &self.live,
        };
        let mut rev = self.rev;
        let now = unix_now();
        for request in batch.iter_mut() {
            let next = rev + 1;
            // The values move into the log; a request is answered from it.
            let outcome = match &mut request.op {
                Op::Create(key, value) => create(&tx, &view, key, take(value), next, now),
                Op::Update(key, value, pre) => update(&tx, &view, key, take(value), pre, next, now),
                Op::Delete(key, pre) => delete(&tx, &view, key, pre, next, now),
                Op::Compact => Ok(Applied {
                    object: None,
                    change: None,
                }),
            };
            match outcome {
                Err(StoreError::Backend(message)) => return Err(StoreError::Backend(message)),
                Ok(applied) => {
                    if let Some(change) = &applied.change {
                        rev = next;
                        view.batch.insert(change.key.clone(), change.clone());
                    }
                    outcomes.push(Ok(applied));
                }
                Err(err) => outcomes.push(Err(err)),
            }
        }
        drop(pending);
        // Compact by count as the log grows, so that its size does not
        // depend on how often the periodic compaction runs; by age when
        // asked. Never past what `objects` holds.
        let slack = self.history.max_entries / 10 + 1;
        let over = rev.saturating_sub(self.compacted) > self.history.max_entries + slack;
        let asked = batch.iter().any(|r| matches!(r.op, Op::Compact));
        let mut compacted = self.compacted;
        if asked || over {
            let applied = self.shared.applied.load(Ordering::Acquire);
            compacted = compact(&tx, &self.history, rev, applied, asked.then_some(now))?;
        }
        if rev != self.rev {
            set_meta(&tx, "rev", rev)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Committed { rev, compacted })
    }
}

/// The newest state of keys as the writer sees them: changes of this batch,
/// then unfolded ones, then `objects`.
struct View<'a> {
    pending: &'a Pending,
    batch: HashMap<Key, Arc<Change>>,
    objects: &'a Connection,
    live: &'a HashSet<Key>,
}

impl View<'_> {
    /// Whether a key exists, without reading its object.
    fn exists(&self, key: &Key) -> bool {
        match self.batch.get(key) {
            Some(change) => change.kind != ChangeKind::Deleted,
            None => self.live.contains(key),
        }
    }
}

/// An object as it stands before a write.
struct Current {
    rev: u64,
    text: String,
    value: Arc<Value>,
}

fn current(view: &View<'_>, key: &Key) -> Result<Option<Current>> {
    if let Some(change) = view.batch.get(key).or_else(|| view.pending.get(key)) {
        return Ok((change.kind != ChangeKind::Deleted).then(|| Current {
            rev: change.rev,
            text: String::from_utf8_lossy(&change.object_json).into_owned(),
            value: change.object.clone(),
        }));
    }
    object_row(view.objects, key)?
        .map(|(rev, text)| {
            let value = Arc::new(parse(&text)?);
            Ok(Current { rev, text, value })
        })
        .transpose()
}

/// Checks preconditions against the current object; on a mismatch returns
/// it in the error.
fn check(pre: &Preconditions, current: &Current) -> Result<()> {
    let uid = current.value["metadata"]["uid"]
        .as_str()
        .unwrap_or_default();
    let rev_ok = pre.rev.is_none_or(|want| want == current.rev);
    let uid_ok = pre.uid.as_deref().is_none_or(|want| want == uid);
    if rev_ok && uid_ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(Object {
            rev: current.rev,
            value: current.value.clone(),
        }))
    }
}

fn with_rev(mut value: Value, rev: u64) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    value
}

/// Appends a change to the log and builds what the write answers and
/// publishes.
fn record(
    conn: &Transaction<'_>,
    key: &Key,
    kind: ChangeKind,
    rev: u64,
    value: Value,
    prev: Option<Current>,
    now: i64,
) -> Result<Applied> {
    let text = serde_json::to_string(&value).map_err(backend)?;
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
            prev.as_ref().map(|p| &p.text),
            now
        ])
    })
    .map_err(backend)?;
    let value = Arc::new(value);
    Ok(Applied {
        object: Some(Object {
            rev,
            value: value.clone(),
        }),
        change: Some(Arc::new(Change {
            rev,
            key: key.clone(),
            kind,
            object: value,
            object_json: Bytes::from(text),
            prev: prev.map(|p| p.value),
        })),
    })
}

fn create(
    conn: &Transaction<'_>,
    view: &View<'_>,
    key: &Key,
    value: Value,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    if view.exists(key) {
        return Err(StoreError::AlreadyExists);
    }
    let value = with_rev(value, rev);
    record(conn, key, ChangeKind::Added, rev, value, None, now)
}

fn update(
    conn: &Transaction<'_>,
    view: &View<'_>,
    key: &Key,
    value: Value,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let old = current(view, key)?.ok_or(StoreError::NotFound)?;
    check(pre, &old)?;
    let value = with_rev(value, rev);
    record(conn, key, ChangeKind::Modified, rev, value, Some(old), now)
}

fn delete(
    conn: &Transaction<'_>,
    view: &View<'_>,
    key: &Key,
    pre: &Preconditions,
    rev: u64,
    now: i64,
) -> Result<Applied> {
    let old = current(view, key)?.ok_or(StoreError::NotFound)?;
    check(pre, &old)?;
    // Watchers see the deleted object at the deletion's revision.
    let last = with_rev((*old.value).clone(), rev);
    record(conn, key, ChangeKind::Deleted, rev, last, Some(old), now)
}

/// Drops changes beyond the history's count and, given the time now, older
/// than its age, never past what `objects` holds; returns the revision
/// compacted up to.
fn compact(
    conn: &Transaction<'_>,
    history: &History,
    rev: u64,
    applied: u64,
    now: Option<i64>,
) -> Result<u64> {
    let by_age: Option<i64> = match now {
        Some(now) => conn
            .prepare_cached("SELECT MAX(rev) FROM changes WHERE at < ?")
            .and_then(|mut s| {
                s.query_row([now - history.max_age.as_secs() as i64], |row| row.get(0))
            })
            .map_err(backend)?,
        None => None,
    };
    let by_count = rev.saturating_sub(history.max_entries);
    let upto = by_count.max(by_age.unwrap_or(0) as u64).min(applied);
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

/// Sends a fold-and-compact to the writer every `every`, until the store
/// is dropped.
pub(super) async fn compact_periodically(writes: mpsc::WeakSender<WriteRequest>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(writes) = writes.upgrade() else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            op: Op::Compact,
            reply,
        };
        if writes.send(request).await.is_err() {
            return;
        }
        drop(writes);
        if let Ok(Err(err)) = answer.await {
            tracing::warn!(error = %err, "compaction failed");
        }
    }
}

/// The keys of every object in `objects` (which opening brought up to date).
fn live_keys(objects: &Connection) -> Result<HashSet<Key>> {
    let mut stmt = objects
        .prepare("SELECT resource, namespace, name FROM objects")
        .map_err(backend)?;
    stmt.query_map([], |row| {
        Ok(Key::new(
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })
    .and_then(|rows| rows.collect())
    .map_err(backend)
}

/// Starts the thread that checkpoints the WAL.
pub(super) fn start_checkpoints(path: &Path, alive: Weak<Shared>) -> Result<()> {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("knit-store-ckpt".into())
        .spawn(move || checkpoint_continually(&path, alive))
        .map_err(backend)?;
    Ok(())
}

/// Copies the WAL back into the database file as the writer goes, until the
/// store is dropped. Passive checkpoints never block the writer or readers.
fn checkpoint_continually(path: &Path, alive: Weak<Shared>) {
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
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
    }
}
