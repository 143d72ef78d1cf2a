//! Watch: a newline-delimited stream of `{"type", "object"}` events for a
//! collection, replayed from the change log then followed live.
//!
//! A watcher subscribes to the store's live changes before it reads
//! anything, so nothing falls between its replay and the live feed; events
//! at or below the revision it has already sent are skipped. A watcher
//! whose client reads too slowly falls behind the live feed and has its
//! watch ended (the client relists), so no client can make the server's
//! memory grow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::header::CONTENT_TYPE;
use knit_api::{ApiError, Result};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::objects::{Filter, key_of};
use crate::request::{Params, Target};
use crate::store::{Change, ChangeKind, ListQuery};
use crate::table::Render;

/// Chunks queued for a watch's HTTP response before the writer waits.
const RESPONSE_BUFFER: usize = 256;

/// The annotation on the bookmark that closes the initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

fn event(kind: &str, object_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object_json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object_json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn value_event(kind: &str, object: &Value) -> Bytes {
    event(kind, &serde_json::to_vec(object).unwrap_or_default())
}

fn error_event(err: &ApiError) -> Bytes {
    value_event("ERROR", &err.to_status())
}

/// What one watch sends: which objects, from where, and how.
struct Watcher {
    target: Target,
    storage_name: String,
    filter: Filter,
    bookmarks: bool,
    /// The conversion the client asked for (Table, metadata), if any.
    render: Option<Render>,
    content_type: String,
    /// The newest revision this watcher has accounted for.
    rev: u64,
}

impl Watcher {
    fn in_scope(&self, change: &Change) -> bool {
        change.key.resource == self.storage_name
            && self
                .target
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == change.key.namespace)
    }

    /// The event a change becomes for this watcher, if any: an object that
    /// starts matching the selectors is ADDED, one that stops is DELETED.
    fn translate(&self, change: &Change) -> Option<Bytes> {
        if !self.in_scope(change) {
            return None;
        }
        let now = self.filter.matches(&change.object);
        let before = change
            .prev
            .as_deref()
            .is_some_and(|p| self.filter.matches(p));
        let kind = match change.kind {
            ChangeKind::Added if now => "ADDED",
            ChangeKind::Deleted if now || before => "DELETED",
            ChangeKind::Modified => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
            _ => return None,
        };
        Some(self.object_event(kind, &change.object, Some(&change.object_json)))
    }

    /// An ADDED/MODIFIED/DELETED event, its object converted as the client
    /// asked (the stored JSON is reused when it is not).
    fn object_event(&self, kind: &str, object: &Value, json: Option<&Bytes>) -> Bytes {
        match (&self.render, json) {
            (Some(render), _) => value_event(kind, &render.event_object(object)),
            (None, Some(json)) => event(kind, json),
            (None, None) => value_event(kind, object),
        }
    }

    fn bookmark(&self, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.rev.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        value_event(
            "BOOKMARK",
            &json!({
                "kind": self.target.resource.kind,
                "apiVersion": self.target.resource.api_version(),
                "metadata": metadata,
            }),
        )
    }
}

/// Answers `GET <collection>?watch=1`.
pub async fn watch(
    state: &AppState,
    target: &Target,
    params: &Params,
    render: Option<Render>,
) -> Result<Response> {
    let filter = Filter::parse(target.resource, params)?;
    let timeout = params
        .int("timeoutSeconds")?
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(state.config.watch_timeout);
    let send_initial = params.get("sendInitialEvents").map(|v| v == "true");
    let from_rev = match params.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("invalid resourceVersion {rv:?}: not an integer"))
        })?),
    };
    let mut watcher = Watcher {
        target: target.clone(),
        storage_name: target.resource.storage_name(),
        filter,
        bookmarks: params.flag("allowWatchBookmarks"),
        content_type: render
            .as_ref()
            .map_or_else(|| "application/json".to_string(), Render::content_type),
        render,
        rev: 0,
    };
    // Subscribe before reading, so that nothing is missed in between.
    let live = state.store.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(RESPONSE_BUFFER);
    let content_type = watcher.content_type.clone();

    let state = state.clone();
    tokio::spawn(async move {
        let initial_list = send_initial.unwrap_or(from_rev.is_none());
        let started = if initial_list {
            send_current(&state, &mut watcher, &tx).await
        } else {
            replay(&state, &mut watcher, from_rev.unwrap_or_default(), &tx).await
        };
        match started {
            Ok(()) => {
                if send_initial == Some(true) && tx.send(watcher.bookmark(true)).await.is_err() {
                    return;
                }
                follow(&state, &mut watcher, live, &tx, timeout).await;
            }
            Err(err) => {
                let _ = tx.send(error_event(&err)).await;
            }
        }
    });

    Ok(Response::builder()
        .header(CONTENT_TYPE, content_type)
        .body(Body::from_stream(
            ReceiverStream::new(rx).map(Ok::<_, Infallible>),
        ))
        .expect("static response parts"))
}

/// Sends an ADDED event for every object that exists now.
async fn send_current(
    state: &AppState,
    watcher: &mut Watcher,
    tx: &mpsc::Sender<Bytes>,
) -> Result<()> {
    let mut after = None;
    let mut at_rev = None;
    loop {
        let page = state
            .store
            .list(ListQuery {
                resource: watcher.storage_name.clone(),
                namespace: watcher.target.namespace.clone(),
                after: after.take(),
                at_rev,
                limit: Some(1000),
            })
            .await
            .map_err(|e| watcher.target.store_error("", e))?;
        at_rev = Some(page.rev);
        watcher.rev = page.rev;
        for object in &page.objects {
            after = Some(key_of(object));
            if watcher.filter.matches(object)
                && tx
                    .send(watcher.object_event("ADDED", object, None))
                    .await
                    .is_err()
            {
                return Ok(());
            }
        }
        if !page.more {
            return Ok(());
        }
    }
}

/// Sends what changed after `rev`, from the change log.
async fn replay(
    state: &AppState,
    watcher: &mut Watcher,
    rev: u64,
    tx: &mpsc::Sender<Bytes>,
) -> Result<()> {
    let changes = state
        .store
        .changes_since(rev, Some(watcher.storage_name.clone()))
        .await
        .map_err(|e| watcher.target.store_error("", e))?;
    watcher.rev = rev;
    for change in changes {
        watcher.rev = change.rev;
        if let Some(event) = watcher.translate(&change)
            && tx.send(event).await.is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Follows live changes until the client leaves, the timeout passes, the
/// watcher falls behind, or the server shuts down.
async fn follow(
    state: &AppState,
    watcher: &mut Watcher,
    mut live: broadcast::Receiver<Arc<Change>>,
    tx: &mpsc::Sender<Bytes>,
    timeout: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_every = tokio::time::interval(state.config.bookmark_interval);
    bookmark_every.tick().await;
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(change) => {
                    if change.rev <= watcher.rev {
                        continue;
                    }
                    watcher.rev = change.rev;
                    if let Some(event) = watcher.translate(&change)
                        && tx.send(event).await.is_err()
                    {
                        return;
                    }
                }
                // Too slow, or the store is gone: end the watch; the
                // client lists again and resumes.
                Err(_) => return,
            },
            _ = bookmark_every.tick(), if watcher.bookmarks => {
                if tx.send(watcher.bookmark(false)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
