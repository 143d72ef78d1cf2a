//! Recording core/v1 Events about the objects a controller acts on, as
//! client-go's event recorder does (without its aggregation): one Event per
//! call, in the involved object's namespace (`default` for cluster-scoped
//! ones such as Nodes).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

/// What an Event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// The source component, e.g. `default-scheduler`.
    pub component: &'static str,
}

/// Posts `note` about `involved`.
pub async fn record(client: &Client, involved: ObjectReference, note: &Note) -> kube::Result<()> {
    let namespace = involved
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".into());
    let now = jiff::Timestamp::now();
    let name = format!(
        "{}.{:x}",
        involved.name.as_deref().unwrap_or("object"),
        now.as_nanosecond()
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(note.reason.into()),
        message: Some(note.message.clone()),
        type_: Some(note.type_.into()),
        source: Some(EventSource {
            component: Some(note.component.into()),
            host: None,
        }),
        reporting_component: Some(note.component.into()),
        reporting_instance: Some(note.component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    };
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}
