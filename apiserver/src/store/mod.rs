//! The revisioned object store: JSON documents keyed by (resource, namespace,
//! name), one global revision that is every object's `resourceVersion`, and a
//! change log that serves watches and consistent paginated lists.
//!
//! The `Store` trait is what the API handlers see; `sqlite` is the embedded
//! implementation. Stores only check preconditions (exists, revision, uid):
//! what an object may become is decided by the handlers before they write.

pub mod sqlite;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::broadcast;

/// Where an object lives: `("pods", "default", "web-1")`; cluster-scoped
/// objects have an empty namespace. `resource` is the storage name
/// (`deployments.apps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A stored object at the revision it was last written.
#[derive(Debug, Clone)]
pub struct Object {
    pub rev: u64,
    /// The object with `metadata.resourceVersion` set to `rev`.
    pub value: Arc<Value>,
}

/// What happened to an object at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }

    fn from_str(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(ChangeKind::Added),
            "MODIFIED" => Some(ChangeKind::Modified),
            "DELETED" => Some(ChangeKind::Deleted),
            _ => None,
        }
    }
}

/// One entry of the change log, as watchers receive it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rev: u64,
    pub key: Key,
    pub kind: ChangeKind,
    /// The object after the change (for a delete: its last state, with the
    /// deletion's revision as `resourceVersion`).
    pub object: Arc<Value>,
    /// The serialized `object`, shared by every watcher that sends it.
    pub object_json: Bytes,
    /// The object before the change (none for an add): lets a filtered
    /// watch see an object leave its selector.
    pub prev: Option<Arc<Value>>,
}

/// Conditions a write must meet, checked inside the store's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The object must still be at this revision.
    pub rev: Option<u64>,
    /// The object must still have this uid.
    pub uid: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object already exists")]
    AlreadyExists,
    #[error("object not found")]
    NotFound,
    /// A precondition failed; carries the object as it is now.
    #[error("precondition failed: object is at revision {}", .0.rev)]
    Conflict(Object),
    /// The revision asked for has been compacted away.
    #[error("revision {requested} is compacted (oldest available: {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("storage failure: {0}")]
    Backend(String),
}

/// `Result` with the store's error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which objects a list reads.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub resource: String,
    /// `None` lists every namespace.
    pub namespace: Option<String>,
    /// Only objects whose (namespace, name) sort after this.
    pub after: Option<(String, String)>,
    /// Read as of this revision (a continue token's); `None` reads now.
    pub at_rev: Option<u64>,
    /// At most this many objects.
    pub limit: Option<usize>,
}

/// A page of a list: objects in (namespace, name) order, and the revision
/// the page was read at.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub objects: Vec<Arc<Value>>,
    pub rev: u64,
    /// Whether objects remain after this page.
    pub more: bool,
}

/// The store API handlers and background tasks use.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &Key) -> BoxFuture<'_, Result<Option<Object>>>;
    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<ListPage>>;
    /// Stores a new object; fails with `AlreadyExists`.
    fn create(&self, key: Key, value: Value) -> BoxFuture<'_, Result<Object>>;
    /// Replaces an object; fails with `NotFound` or `Conflict`.
    fn update(&self, key: Key, value: Value, pre: Preconditions) -> BoxFuture<'_, Result<Object>>;
    /// Removes an object; returns its last state at the deletion revision.
    fn delete(&self, key: Key, pre: Preconditions) -> BoxFuture<'_, Result<Object>>;
    /// Changes after `rev` (oldest first) of one resource, or of all when
    /// `resource` is `None`; `Compacted` when the log no longer reaches back.
    fn changes_since(
        &self,
        rev: u64,
        resource: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<Change>>>;
    /// The newest committed revision.
    fn current_rev(&self) -> u64;
    /// Live changes, published in revision order after they are durable. A
    /// receiver that falls behind by the channel's capacity lags and must
    /// resynchronise (watchers end their watch).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>>;
}
