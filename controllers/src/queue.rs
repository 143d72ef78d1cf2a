//! A work queue of object keys, as client-go's: a key queued again while it
//! waits is queued once, so a burst of events costs one reconcile.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// `(namespace, name)` of the object to reconcile.
pub type Key = (String, String);

/// A deduplicating FIFO of keys.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: Mutex<(VecDeque<Key>, HashSet<Key>)>,
    ready: Notify,
}

impl Queue {
    /// Queues `key` unless it already waits.
    pub fn add(&self, key: Key) {
        let mut waiting = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.1.insert(key.clone()) {
            waiting.0.push_back(key);
            self.inner.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`: a failed reconcile's retry, or a
    /// deadline to look at it again.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key, waiting for one.
    pub async fn next(&self) -> Key {
        loop {
            {
                let mut waiting = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(key) = waiting.0.pop_front() {
                    waiting.1.remove(&key);
                    return key;
                }
            }
            self.inner.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_while_waiting_comes_out_once() {
        let queue = Queue::default();
        let key = |n: &str| ("default".to_string(), n.to_string());
        queue.add(key("a"));
        queue.add(key("b"));
        queue.add(key("a"));
        assert_eq!(queue.next().await, key("a"));
        assert_eq!(queue.next().await, key("b"));
        queue.add(key("a"));
        assert_eq!(queue.next().await, key("a"));
    }
}
