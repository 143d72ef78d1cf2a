//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability comes from the change log, as etcd's comes from its raft
//! log: every write appends its change (the object after and before it) to
//! `changes`, and one writer thread commits everything waiting in its queue
//! in one transaction with one fsync (`synchronous=FULL`). Only then are the
//! changes published to watchers and the requests answered: an acknowledged
//! write is on disk, and concurrent writers share one commit.
//!
//! The current state, `objects`, is written behind, in a file of its own
//! (`<name>.objects`) by a folder thread: it folds committed changes into it
//! many at a time, and its `meta.applied` says up to which revision it is
//! current. Appending to the log writes a few sequential pages per batch,
//! where updating a B-tree keyed by name writes a page per object; folding
//! many changes at once pays for each page once, and in its own file it
//! never holds up the log. Until folded, changes are also kept in memory
//! (`Pending`) for point reads; lists read `objects` and then the log past
//! `applied` (the log is never compacted past `applied`). On open, whatever a
//! crash left unfolded is folded first.
//!
//! The writer owns its connection on a thread of its own (rusqlite, cached
//! statements): a driver that hops to a worker thread per statement spends
//! more on wake-ups than SQLite spends on the work (measured with
//! `knit-bench`). WAL checkpoints run on another thread; reads run on
//! blocking threads over a small pool of read-only connections.

mod folder;
mod read;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use super::{
    Change, ChangeKind, Key, ListPage, ListQuery, Object, Preconditions, Result, Store, StoreError,
};
use folder::FolderMessage;
use writer::{Op, WriteRequest, Writer};

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

/// Changes buffered for live watchers before a slow one is cut off.
const WATCH_BUFFER: usize = 16 * 1024;
/// Reads that run at once, each on its own pooled connection.
const READERS: usize = 4;

/// The change log needs no index beyond its revision: every query on it
/// reads a range of revisions (watch replay, the unfolded tail, lists at a
/// past revision, compaction), and each extra index costs every write.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS changes (
        rev INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, prev TEXT,
        at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// A read-only connection to each file: the log and `objects`.
pub(super) struct ReadConn {
    pub(super) log: Connection,
    pub(super) objects: Connection,
}

fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend)?;
    conn.execute_batch("PRAGMA mmap_size = 268435456;")
        .map_err(backend)?;
    Ok(conn)
}

/// Read-only connections, opened as needed and kept for reuse; the
/// permits bound how many reads run at once, so that every read finds an
/// open connection once the pool is warm.
struct Readers {
    log: PathBuf,
    objects: PathBuf,
    idle: Mutex<Vec<ReadConn>>,
    permits: Semaphore,
}

impl Readers {
    fn with<T>(&self, read: impl FnOnce(&mut ReadConn) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().expect("reader pool lock").pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => ReadConn {
                log: open_read_only(&self.log)?,
                objects: open_read_only(&self.objects)?,
            },
        };
        let result = read(&mut conn);
        self.idle.lock().expect("reader pool lock").push(conn);
        result
    }
}

/// Changes committed but not yet folded into `objects`, newest per key.
type Pending = HashMap<Key, Arc<Change>>;

struct Shared {
    readers: Readers,
    rev: AtomicU64,
    /// `objects` holds every change up to this revision.
    applied: AtomicU64,
    changes: broadcast::Sender<Arc<Change>>,
    pending: RwLock<Pending>,
}

/// The SQLite store. Cloning shares it.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteRequest>,
    folder: std::sync::mpsc::Sender<FolderMessage>,
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

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(backend)
}

fn set_meta(conn: &Connection, key: &str, value: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?, ?)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut stmt| stmt.execute(rusqlite::params![key, value as i64]))
    .map_err(backend)?;
    Ok(())
}

/// The objects file beside the log: `knit.db` -> `knit.db.objects`.
fn objects_path(log: &Path) -> PathBuf {
    let mut path = log.as_os_str().to_owned();
    path.push(".objects");
    path.into()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, folds what a
    /// crash left unfolded, and starts the writer and checkpoint threads and
    /// the compaction task.
    pub async fn open(path: &Path, history: History) -> Result<Self> {
        let (log, objects) = (path.to_path_buf(), objects_path(path));
        let opening = (log.clone(), objects.clone());
        let (opened, folder_conn, objects_reader) = tokio::task::spawn_blocking(move || {
            let opened = writer::open(&opening.0)?;
            let folder_conn = folder::open(&opening.1, &opened.conn, opened.rev)?;
            Ok::<_, StoreError>((opened, folder_conn, open_read_only(&opening.1)?))
        })
        .await
        .map_err(backend)??;
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            readers: Readers {
                log: log.clone(),
                objects,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            },
            rev: AtomicU64::new(opened.rev),
            applied: AtomicU64::new(opened.rev),
            changes,
            pending: RwLock::new(Pending::new()),
        });
        let folder = folder::start(folder_conn, Arc::downgrade(&shared))?;
        let writes = Writer::start(
            opened,
            objects_reader,
            shared.clone(),
            folder.clone(),
            history.clone(),
        )?;
        writer::start_checkpoints(&log, Arc::downgrade(&shared))?;
        let store = Self {
            shared,
            writes,
            folder,
        };
        tokio::spawn(writer::compact_periodically(
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

    /// Runs a read on a blocking thread with pooled connections.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut ReadConn) -> Result<T> + Send + 'static,
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

    /// Folds every committed change, then compacts the change log (as the
    /// periodic task does, which does not wait for a fold).
    pub async fn compact(&self) -> Result<()> {
        let (ack, folded) = oneshot::channel();
        self.folder
            .send(FolderMessage::FoldNow(ack))
            .map_err(|_| backend("the store's folder has stopped"))?;
        folded
            .await
            .map_err(|_| backend("the store's folder has stopped"))?;
        self.write(Op::Compact).await.map(|_| ())
    }

    /// The oldest revision a watch can resume from.
    pub async fn compacted_rev(&self) -> Result<u64> {
        self.read(|conn| read::meta_value(&conn.log, "compacted"))
            .await
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &Key) -> BoxFuture<'_, Result<Option<Object>>> {
        // An unfolded change is the answer; `objects` has it otherwise (the
        // writer drops a pending change only once its fold is committed).
        let pending = self
            .shared
            .pending
            .read()
            .expect("pending lock")
            .get(key)
            .cloned();
        if let Some(change) = pending {
            let found = (change.kind != ChangeKind::Deleted).then(|| Object {
                rev: change.rev,
                value: change.object.clone(),
            });
            return futures::future::ready(Ok(found)).boxed();
        }
        let key = key.clone();
        self.read(move |conn| read::get(&conn.objects, &key))
            .boxed()
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<ListPage>> {
        self.read(move |conn| read::list(conn, &query)).boxed()
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
        self.read(move |conn| read::changes_since(&mut conn.log, rev, resource.as_deref()))
            .boxed()
    }

    fn current_rev(&self) -> u64 {
        self.shared.rev.load(Ordering::Acquire)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.shared.changes.subscribe()
    }
}
