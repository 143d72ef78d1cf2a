//! The event recorder against a whole API server in-process: repeats of one
//! note land on one Event whose `count` and `lastTimestamp` grow (what
//! `kubectl describe` shows as `(x3 over 2m)`), concurrent repeats are all
//! counted, and a different message is a different Event.

mod common;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use knit_controllers::events::{Note, record};
use kube::Api;
use kube::api::ListParams;

fn pod(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some("default".into()),
        uid: Some(format!("{name}-uid")),
        ..ObjectReference::default()
    }
}

fn note(message: &str) -> Note {
    Note {
        type_: "Warning",
        reason: "FailedScheduling",
        message: message.into(),
        component: "default-scheduler",
    }
}

async fn events_about(events: &Api<Event>, name: &str) -> Vec<Event> {
    let mut list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items;
    list.sort_by(|a, b| a.message.cmp(&b.message));
    list
}

#[tokio::test]
async fn repeats_count_on_one_event_and_other_messages_get_their_own() {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    let events: Api<Event> = Api::default_namespaced(client.clone());

    for _ in 0..3 {
        record(&client, pod("web"), &note("0/1 nodes are available"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    record(&client, pod("web"), &note("0/2 nodes are available"))
        .await
        .unwrap();

    let list = events_about(&events, "web").await;
    assert_eq!(list.len(), 2, "{list:#?}");
    let repeated = &list[0];
    assert_eq!(repeated.message.as_deref(), Some("0/1 nodes are available"));
    assert_eq!(repeated.count, Some(3));
    let first = repeated.first_timestamp.as_ref().unwrap().0;
    let last = repeated.last_timestamp.as_ref().unwrap().0;
    assert!(
        last.duration_since(first) >= jiff::SignedDuration::from_secs(2),
        "lastTimestamp moves with each repeat: {first} .. {last}"
    );
    assert_eq!(list[1].count, Some(1));
    assert_eq!(
        list[1].source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );
}

#[tokio::test]
async fn concurrent_repeats_are_all_counted() {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let said = (0..4).map(|_| {
        let client = client.clone();
        async move { record(&client, pod("api"), &note("same")).await }
    });
    for result in futures::future::join_all(said).await {
        result.unwrap();
    }
    let list = events_about(&events, "api").await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].count, Some(4));
}
