//! Watch semantics: initial state, resume from a revision, selectors,
//! bookmarks, initial-events end marker, 410 after compaction, and the
//! `kube` crate's watcher running against knit.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use knit_apiserver::store::sqlite::History;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const WAIT: Duration = Duration::from_secs(5);

fn cm(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}})
}

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn watch_from_zero_sends_existing_objects_then_changes() {
    let api = common::start().await;
    assert_eq!(api.post_json(CONFIGMAPS, &cm("a", "web")).await.code, 201);
    let uri = format!("{CONFIGMAPS}?watch=1&resourceVersion=0");
    let writer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(api.post_json(CONFIGMAPS, &cm("b", "web")).await.code, 201);
    };
    let (events, ()) = tokio::join!(api.watch_events(&uri, 2, WAIT), writer);
    assert_eq!(summary(&events), pairs(&[("ADDED", "a"), ("ADDED", "b")]));
}

#[tokio::test]
async fn watch_resumes_after_a_resource_version() {
    let api = common::start().await;
    let first = api.post_json(CONFIGMAPS, &cm("a", "web")).await;
    let rv = first.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    api.post_json(CONFIGMAPS, &cm("b", "web")).await;
    let patch = json!({"data": {"k": "changed"}});
    let reply = api
        .request(
            http::Method::PATCH,
            &format!("{CONFIGMAPS}/a"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let reply = api
        .request(
            http::Method::DELETE,
            &format!("{CONFIGMAPS}/b"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);

    let events = api
        .watch_events(
            &format!("{CONFIGMAPS}?watch=true&resourceVersion={rv}"),
            3,
            WAIT,
        )
        .await;
    assert_eq!(
        summary(&events),
        pairs(&[("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")])
    );
    assert_eq!(events[1]["object"]["data"]["k"], "changed");
    let revs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let api = common::start().await;
    let start = api.get(CONFIGMAPS).await.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    api.post_json(CONFIGMAPS, &cm("a", "db")).await;
    for app in ["web", "db"] {
        let patch = json!({"metadata": {"labels": {"app": app}}});
        api.request(
            http::Method::PATCH,
            &format!("{CONFIGMAPS}/a"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    }
    let uri = format!("{CONFIGMAPS}?watch=1&resourceVersion={start}&labelSelector=app%3Dweb");
    let events = api.watch_events(&uri, 2, WAIT).await;
    assert_eq!(summary(&events), pairs(&[("ADDED", "a"), ("DELETED", "a")]));
}

#[tokio::test]
async fn initial_events_end_with_an_annotated_bookmark() {
    let api = common::start().await;
    api.post_json(CONFIGMAPS, &cm("a", "web")).await;
    api.post_json(CONFIGMAPS, &cm("b", "web")).await;
    let uri = format!(
        "{CONFIGMAPS}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion="
    );
    let events = api.watch_events(&uri, 3, WAIT).await;
    assert_eq!(
        summary(&events)[..2],
        pairs(&[("ADDED", "a"), ("ADDED", "b")])[..]
    );
    assert_eq!(events[2]["type"], "BOOKMARK");
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let bookmark_rv: u64 = events[2]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let b_rv: u64 = events[1]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bookmark_rv >= b_rv);
}

#[tokio::test]
async fn periodic_bookmarks_when_allowed() {
    let api = common::start().await;
    let uri = format!("{CONFIGMAPS}?watch=1&allowWatchBookmarks=true&resourceVersion=1");
    let events = api.watch_events(&uri, 1, WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(events[0]["object"]["kind"], "ConfigMap");
}

#[tokio::test]
async fn a_compacted_revision_is_expired() {
    let api = common::start_with(History {
        max_entries: 3,
        ..History::default()
    })
    .await;
    for i in 0..10 {
        api.post_json(CONFIGMAPS, &cm(&format!("c{i}"), "web"))
            .await;
    }
    api.store.compact().await.unwrap();
    let events = api
        .watch_events(&format!("{CONFIGMAPS}?watch=1&resourceVersion=2"), 1, WAIT)
        .await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");

    // A continue token from before the compaction is expired too.
    let page = api.get(&format!("{CONFIGMAPS}?limit=2")).await;
    let token = page.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 10..20 {
        api.post_json(CONFIGMAPS, &cm(&format!("c{i}"), "web"))
            .await;
    }
    api.store.compact().await.unwrap();
    let next = api
        .get(&format!("{CONFIGMAPS}?limit=2&continue={token}"))
        .await;
    assert_eq!(next.code, 410, "{}", next.text);
}

#[tokio::test]
async fn the_kube_runtime_watcher_follows_knit() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let make = |name: &str| -> ConfigMap { serde_json::from_value(cm(name, "web")).unwrap() };
    maps.create(&PostParams::default(), &make("before"))
        .await
        .unwrap();

    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let stream = watcher::watcher(maps.clone(), config.clone()).default_backoff();
        let mut objects = Box::pin(stream.applied_objects());
        let first = tokio::time::timeout(WAIT, objects.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("before"));
        let name = format!(
            "after-{}",
            if config.initial_list_strategy == watcher::InitialListStrategy::ListWatch {
                "list"
            } else {
                "stream"
            }
        );
        maps.create(&PostParams::default(), &make(&name))
            .await
            .unwrap();
        let next = tokio::time::timeout(WAIT, objects.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.metadata.name.as_deref(), Some(name.as_str()));
        let patch = json!({"data": {"k": "w"}});
        maps.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let changed = tokio::time::timeout(WAIT, objects.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(changed.data.unwrap()["k"], "w");
        maps.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_ended() {
    use knit_apiserver::store::{Key, Store};
    let api = common::start().await;
    let request = http::Request::builder()
        .uri(format!("{CONFIGMAPS}?watch=1&resourceVersion=1"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(api.router.clone(), request)
        .await
        .unwrap();
    // Nobody reads the stream while far more changes happen than a watcher
    // may hold back.
    let total = 20_000;
    let writes = (0..total).map(|i| {
        let store = api.store.clone();
        async move {
            let name = format!("c{i}");
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "uid": name}});
            store.create(Key::new("configmaps", "default", &name), object).await.unwrap();
        }
    });
    futures::future::join_all(writes).await;

    let mut body = response.into_body();
    let mut delivered = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        use http_body_util::BodyExt;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                delivered += data.iter().filter(|b| **b == b'\n').count();
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the lagging watch must end, not wait for more"
    );
    assert!(
        delivered < total,
        "delivered {delivered} of {total}: nothing was cut off"
    );
}

#[tokio::test]
async fn timeout_seconds_ends_the_watch() {
    let api = common::start().await;
    let started = tokio::time::Instant::now();
    // Asks for more events than will come: the server must end the stream.
    let events = api
        .watch_events(
            &format!("{CONFIGMAPS}?watch=1&resourceVersion=1&timeoutSeconds=1"),
            1,
            WAIT,
        )
        .await;
    let took = started.elapsed();
    assert!(events.is_empty(), "{events:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the watch ended after {took:?}"
    );
}
