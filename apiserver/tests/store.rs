//! The SQLite store on real files: durability across reopen, compaction of
//! the change log, and bounded files under churn.

use std::time::Duration;

use knit_apiserver::store::sqlite::{History, SqliteStore};
use knit_apiserver::store::{Key, ListQuery, Preconditions, Store, StoreError};
use serde_json::json;

fn object(name: &str, payload: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}, "data": {"p": payload}})
}

#[tokio::test]
async fn state_and_revision_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("knit.db");
    let last_rev;
    {
        let store = SqliteStore::open(&path, History::default()).await.unwrap();
        for i in 0..10 {
            store
                .create(
                    Key::new("configmaps", "default", format!("m{i}")),
                    object(&format!("m{i}"), "x"),
                )
                .await
                .unwrap();
        }
        let updated = store
            .update(
                Key::new("configmaps", "default", "m3"),
                object("m3", "y"),
                Preconditions::default(),
            )
            .await
            .unwrap();
        store
            .delete(
                Key::new("configmaps", "default", "m4"),
                Preconditions::default(),
            )
            .await
            .unwrap();
        last_rev = store.current_rev();
        assert_eq!(last_rev, updated.rev + 1);
    }
    let store = SqliteStore::open(&path, History::default()).await.unwrap();
    assert_eq!(store.current_rev(), last_rev);
    let page = store
        .list(ListQuery {
            resource: "configmaps".into(),
            namespace: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 9);
    let m3 = store
        .get(&Key::new("configmaps", "default", "m3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m3.value["data"]["p"], "y");
    assert_eq!(m3.value["metadata"]["resourceVersion"], m3.rev.to_string());
    // The next write continues the revision sequence.
    let next = store
        .create(Key::new("configmaps", "default", "n"), object("n", "z"))
        .await
        .unwrap();
    assert_eq!(next.rev, last_rev + 1);
}

#[tokio::test]
async fn preconditions_are_checked_inside_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("knit.db"), History::default())
        .await
        .unwrap();
    let key = Key::new("configmaps", "default", "a");
    let first = store.create(key.clone(), object("a", "1")).await.unwrap();
    assert!(matches!(
        store.create(key.clone(), object("a", "1")).await,
        Err(StoreError::AlreadyExists)
    ));
    let second = store
        .update(
            key.clone(),
            object("a", "2"),
            Preconditions {
                rev: Some(first.rev),
                uid: None,
            },
        )
        .await
        .unwrap();
    // The same precondition again is stale now.
    match store
        .update(
            key.clone(),
            object("a", "3"),
            Preconditions {
                rev: Some(first.rev),
                uid: None,
            },
        )
        .await
    {
        Err(StoreError::Conflict(current)) => assert_eq!(current.rev, second.rev),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let wrong_uid = Preconditions {
        rev: None,
        uid: Some("someone-else".into()),
    };
    assert!(matches!(
        store.delete(key.clone(), wrong_uid).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .update(
                Key::new("configmaps", "default", "missing"),
                object("missing", "1"),
                Preconditions::default()
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn churn_is_compacted_and_files_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("knit.db");
    let history = History {
        max_age: Duration::from_secs(300),
        max_entries: 200,
        interval: Duration::from_secs(3600),
    };
    let store = SqliteStore::open(&path, history).await.unwrap();
    let payload = "x".repeat(2048);
    let key = Key::new("configmaps", "default", "hot");
    store
        .create(key.clone(), object("hot", &payload))
        .await
        .unwrap();
    // 20,000 updates of a 2 KiB object is ~40 MiB of history uncompacted.
    for _ in 0..20 {
        let writes = (0..1000).map(|_| {
            store.update(
                key.clone(),
                object("hot", &payload),
                Preconditions::default(),
            )
        });
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
    }
    // The writer kept the log near its bound without the periodic task: at
    // most `max_entries` (and a tenth) plus what waits to be folded.
    let rev = store.current_rev();
    assert!(store.compacted_rev().await.unwrap() >= rev - 221 - 2048);
    store.compact().await.unwrap();
    assert!(store.compacted_rev().await.unwrap() >= rev - 200);
    assert!(store.changes_since(rev - 150, None).await.unwrap().len() == 150);
    assert!(matches!(
        store.changes_since(1, None).await,
        Err(StoreError::Compacted { .. })
    ));
    let size = |suffix: &str| {
        std::fs::metadata(dir.path().join(format!("knit.db{suffix}")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (db, wal) = (size(""), size("-wal"));
    // The log keeps `max_entries` plus what waits to be folded (at most a
    // couple of thousand changes), ~10 MiB here; every version would be
    // ~80 MiB.
    assert!(db < 16 << 20, "database file is {db} bytes");
    // Uncheckpointed, the WAL would hold every version: ~120 MiB here.
    assert!(wal <= 64 << 20, "WAL file is {wal} bytes");
}
