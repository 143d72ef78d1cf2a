//! What every controller's `run` starts from: a reflector cache of one
//! kind across all namespaces with the stream of objects its watch touched
//! (applied or deleted; the watcher backs off and resumes on errors), and
//! the key an object is queued under.

use futures::Stream;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::queue::Key;

/// `(namespace, name)` of `object`.
pub fn key_of<K: ResourceExt>(object: &K) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// A cache of every `K` and the stream that fills it; the cache is only
/// filled while the stream is polled.
pub fn reflect<K>(
    client: &Client,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + use<K>,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let touched = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    (store, touched)
}
