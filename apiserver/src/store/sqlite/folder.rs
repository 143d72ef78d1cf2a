//! The folder thread: writes committed changes into `objects` (its own
//! database file, so that folding never holds the log's write lock), many
//! at a time, and then drops them from the in-memory pending map.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::read::{log_range, meta_value};
use super::{Shared, backend, set_meta};
use crate::store::{Change, ChangeKind, Key, Result};

/// Committed changes are folded at least this often...
const FOLD_EVERY: Duration = Duration::from_millis(200);
/// ...and as soon as this many wait.
const FOLD_ENTRIES: usize = 2048;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS objects (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        rev INTEGER NOT NULL, uid TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// What the writer and the store send the folder.
pub(super) enum FolderMessage {
    /// Changes just committed to the log, in revision order.
    Committed(Vec<Arc<Change>>),
    /// Fold everything received so far, then answer.
    FoldNow(oneshot::Sender<()>),
}

/// Opens the objects file and brings it up to `rev` from the log (what a
/// crash left unfolded); returns the connection.
pub(super) fn open(path: &Path, log: &Connection, rev: u64) -> Result<Connection> {
    let mut conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(16);
    // The log is what makes writes durable; a fold only has to be atomic
    // (its rows and `applied` together), and is fsynced for compaction's sake.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA mmap_size = 268435456;",
    )
    .map_err(backend)?;
    conn.execute_batch(SCHEMA).map_err(backend)?;
    let applied = meta_value(&conn, "applied")?;
    if applied < rev {
        let tail = log_range(log, applied, rev, None)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        fold(&tx, tail.iter())?;
        set_meta(&tx, "applied", rev)?;
        tx.commit().map_err(backend)?;
    }
    Ok(conn)
}

/// Starts the folder thread; returns the queue to it.
pub(super) fn start(conn: Connection, shared: Weak<Shared>) -> Result<Sender<FolderMessage>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("knit-store-fold".into())
        .spawn(move || run(conn, shared, rx))
        .map_err(backend)?;
    Ok(tx)
}

fn run(mut conn: Connection, shared: Weak<Shared>, queue: Receiver<FolderMessage>) {
    let mut waiting: Vec<Arc<Change>> = Vec::new();
    let mut since = Instant::now();
    loop {
        let (due, ack) = match queue.recv_timeout(FOLD_EVERY.saturating_sub(since.elapsed())) {
            Ok(FolderMessage::Committed(changes)) => {
                if waiting.is_empty() {
                    since = Instant::now();
                }
                waiting.extend(changes);
                (waiting.len() >= FOLD_ENTRIES, None)
            }
            Ok(FolderMessage::FoldNow(ack)) => (true, Some(ack)),
            Err(RecvTimeoutError::Timeout) => (true, None),
            // The store is gone.
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if due && !waiting.is_empty() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            match fold_and_release(&mut conn, &shared, &waiting) {
                Ok(()) => waiting.clear(),
                // Kept, and tried again at the next fold.
                Err(err) => tracing::error!(error = %err, "folding changes failed"),
            }
            since = Instant::now();
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

/// Folds `changes` in one transaction, then publishes the new `applied` and
/// drops from the pending map each key whose newest change is now folded.
fn fold_and_release(conn: &mut Connection, shared: &Shared, changes: &[Arc<Change>]) -> Result<()> {
    let applied = changes.last().map(|c| c.rev).unwrap_or_default();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    fold(&tx, changes.iter().map(|c| &**c))?;
    set_meta(&tx, "applied", applied)?;
    tx.commit().map_err(backend)?;
    shared.applied.store(applied, Ordering::Release);
    let mut pending = shared.pending.write().expect("pending lock");
    for change in changes {
        if pending
            .get(&change.key)
            .is_some_and(|newest| newest.rev <= applied)
        {
            pending.remove(&change.key);
        }
    }
    Ok(())
}

/// Writes changes into `objects`; a later change of a key wins.
fn fold<'c>(conn: &Connection, changes: impl Iterator<Item = &'c Change>) -> Result<()> {
    let mut latest: HashMap<&Key, &Change> = HashMap::new();
    for change in changes {
        latest.insert(&change.key, change);
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO objects (resource, namespace, name, rev, uid, value) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (resource, namespace, name)
             DO UPDATE SET rev = excluded.rev, uid = excluded.uid, value = excluded.value",
        )
        .map_err(backend)?;
    let mut remove = conn
        .prepare_cached("DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?")
        .map_err(backend)?;
    for (key, change) in latest {
        let written = if change.kind == ChangeKind::Deleted {
            remove.execute(params![key.resource, key.namespace, key.name])
        } else {
            let uid = change.object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default();
            let text = std::str::from_utf8(&change.object_json).map_err(backend)?;
            upsert.execute(params![
                key.resource,
                key.namespace,
                key.name,
                change.rev as i64,
                uid,
                text
            ])
        };
        written.map_err(backend)?;
    }
    Ok(())
}
