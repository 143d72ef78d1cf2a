//! Keeps the published index in step with the API: one watch on Services
//! and one on EndpointSlices, each event turned into the small records of
//! [`records`] at once (the objects are not kept), and
//! the index rebuilt and published after each batch of events that arrive
//! together. A rebuild of a few thousand Services takes milliseconds, so a
//! change is in the answers well within the 100 ms the cluster expects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use super::records::{self, Index, ServiceRec, SliceRec, Sources};
use super::server::Published;

type Key = (String, String);

/// One watch event, reduced to what DNS needs.
enum Change {
    Services(Event<ServiceRec>),
    Slices(Event<SliceRec>),
}

enum Event<T> {
    /// A relist starts.
    Init,
    /// An object of a relist, or one added or changed.
    Apply(Key, Option<T>, bool),
    /// The relist is complete.
    InitDone,
    /// An object went.
    Delete(Key),
}

fn reduce<K, T>(event: watcher::Event<K>, f: impl Fn(&K) -> Option<T>) -> Event<T>
where
    K: kube::Resource,
{
    match event {
        watcher::Event::Init => Event::Init,
        watcher::Event::InitApply(o) => Event::Apply(records::key_of(o.meta()), f(&o), true),
        watcher::Event::Apply(o) => Event::Apply(records::key_of(o.meta()), f(&o), false),
        watcher::Event::InitDone => Event::InitDone,
        watcher::Event::Delete(o) => Event::Delete(records::key_of(o.meta())),
    }
}

/// One kind's relist in progress.
struct Kind<T> {
    relist: Option<BTreeMap<Key, T>>,
    synced: bool,
}

impl<T> Kind<T> {
    fn new() -> Self {
        Kind {
            relist: None,
            synced: false,
        }
    }

    /// Applies one event to `live`; whether it changed.
    fn apply(&mut self, live: &mut BTreeMap<Key, T>, event: Event<T>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::Apply(key, value, initial) => {
                let target = match (&mut self.relist, initial) {
                    (Some(relist), true) => relist,
                    _ => &mut *live,
                };
                match value {
                    Some(v) => target.insert(key, v),
                    None => target.remove(&key),
                };
                !initial
            }
            Event::InitDone => {
                if let Some(fresh) = self.relist.take() {
                    *live = fresh;
                }
                self.synced = true;
                true
            }
            Event::Delete(key) => live.remove(&key).is_some(),
        }
    }
}

/// Follows Services and EndpointSlices through `client` and publishes a
/// fresh index for `zone` after each batch of changes; `synced` turns
/// true once both first lists are in. Runs until dropped.
pub async fn follow(
    client: Client,
    zone: String,
    nameserver: Ipv4Addr,
    published: Arc<Published>,
    synced: watch::Sender<bool>,
) {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Services(reduce(e, records::service_rec))));
    let slices = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Slices(reduce(e, records::slice_rec))));
    let mut events = futures::stream::select(services.boxed(), slices.boxed());
    let mut svc: Kind<ServiceRec> = Kind::new();
    let mut eps: Kind<SliceRec> = Kind::new();
    let mut sources = Sources::default();
    let mut serial: u32 = 1;
    while let Some(first) = events.next().await {
        let mut changed = false;
        let mut next = Some(first);
        // Everything already waiting joins this batch: one rebuild for a
        // burst of events.
        while let Some(event) = next {
            match event {
                Ok(Change::Services(e)) => changed |= svc.apply(&mut sources.services, e),
                Ok(Change::Slices(e)) => changed |= eps.apply(&mut sources.slices, e),
                Err(err) => tracing::warn!(error = %err, "DNS: watch"),
            }
            next = events.next().now_or_never().flatten();
        }
        if !(changed && svc.synced && eps.synced) {
            continue;
        }
        serial = serial.wrapping_add(1);
        published.publish(Index::build(&zone, nameserver, &sources, serial));
        synced.send_replace(true);
    }
}
