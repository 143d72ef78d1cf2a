//! How much one server takes on at once, as kube-apiserver's
//! max-requests-inflight and priority-and-fairness do in their simplest
//! form: short requests share a fixed number of slots and the one that
//! finds none gets a 429 with `Retry-After` at once (queueing would only
//! move the pile-up into memory); each user may keep a bounded number of
//! watches open. The admin and the controllers are exempt, as
//! system:masters is in Kubernetes, so an overloaded cluster can still
//! be inspected and repaired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::StatusCode;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::json;
use tokio::sync::Semaphore;

use super::Identity;
use super::authz::{self, Attributes};

/// The default cap on short requests in flight (kube-apiserver's
/// `--max-requests-inflight` default).
pub const DEFAULT_MAX_INFLIGHT: usize = 400;
/// The default cap on watches one user keeps open.
pub const DEFAULT_MAX_WATCHES_PER_USER: usize = 100;

/// The counters.
#[derive(Debug)]
pub struct Limits {
    inflight: Arc<Semaphore>,
    watches: Arc<Mutex<HashMap<String, usize>>>,
    max_watches: usize,
}

impl Limits {
    pub fn new(max_inflight: usize, max_watches: usize) -> Limits {
        Limits {
            inflight: Arc::new(Semaphore::new(max_inflight)),
            watches: Arc::default(),
            max_watches,
        }
    }

    /// Runs the request within the limits, or answers 429.
    pub async fn run(
        &self,
        who: &Identity,
        attrs: &Attributes,
        request: Request,
        next: Next,
    ) -> Response {
        let exempt = who.in_group(authz::MASTERS) || who.user == authz::CONTROLLERS;
        if exempt {
            return next.run(request).await;
        }
        if attrs.verb == "watch" {
            let Some(slot) = self.watch_slot(&who.user) else {
                return too_many(&format!(
                    "too many watches open for user {:?} (at most {})",
                    who.user, self.max_watches
                ));
            };
            let response = next.run(request).await;
            // The slot is held as long as the stream is, so a watch that
            // ends, or whose client goes away, frees it.
            let (parts, body) = response.into_parts();
            let stream = body.into_data_stream().map(move |chunk| {
                let _held = &slot;
                chunk
            });
            return Response::from_parts(parts, Body::from_stream(stream));
        }
        if long_running(attrs, request.uri().query()) {
            return next.run(request).await;
        }
        let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
            return too_many("Too many requests, please try again later.");
        };
        next.run(request).await
    }

    fn watch_slot(&self, user: &str) -> Option<WatchSlot> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let open = watches.entry(user.to_owned()).or_default();
        if *open >= self.max_watches {
            return None;
        }
        *open += 1;
        Some(WatchSlot {
            watches: self.watches.clone(),
            user: user.to_owned(),
        })
    }
}

/// `kubectl logs -f`: streams as long as the container writes.
fn long_running(attrs: &Attributes, query: Option<&str>) -> bool {
    attrs.subresource == "log" && crate::request::Params::parse(query).flag("follow")
}

struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = watches.get_mut(&self.user) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                watches.remove(&self.user);
            }
        }
    }
}

/// kube-apiserver's 429.
fn too_many(message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": 1},
        "code": 429
    });
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(CONTENT_TYPE, "application/json"), (RETRY_AFTER, "1")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}
