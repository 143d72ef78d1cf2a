//! Recording core/v1 Events about the objects a controller acts on, as
//! client-go's event recorder does, in the involved object's namespace
//! (`default` for cluster-scoped ones such as Nodes), with its
//! aggregation: a repeat of the same note (involved object, type, reason,
//! message and source) within [`SERIES_WINDOW`] of the last one bumps
//! `count` and `lastTimestamp` of the existing Event instead of adding
//! another, so `kubectl describe` shows `(x3 over 2m)`.
//!
//! client-go finds the existing Event through an LRU cache in the
//! recorder. Here the Event's name is derived from the note itself
//! (`<object>.<16 hex digits of its hash>`, the shape of client-go's
//! names), so the API server is the cache: the recorder keeps nothing in
//! memory, repeats are found across controller restarts and processes,
//! and two controllers saying the same thing meet on one Event. A repeat
//! costs a failed create, a read and a replace.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long after an Event's last occurrence a repeat still counts on it;
/// a later repeat starts the Event again at `count: 1`.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_secs(600);
/// How many times a repeat is retried when another writer moved the Event
/// between the read and the replace.
const CONFLICT_RETRIES: usize = 5;
/// Object names are at most 253 characters; the hash suffix takes 17.
const MAX_PREFIX: usize = 253 - 17;

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

/// 64-bit FNV-1a, fields separated by a NUL so `("ab", "c")` and
/// `("a", "bc")` differ.
fn fnv1a(fields: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for byte in field.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The namespace the Event about `involved` lives in.
pub fn namespace_of(involved: &ObjectReference) -> String {
    involved
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The name of the Event that says `note` about `involved`: the same for
/// every repeat, different for anything that tells them apart.
pub fn event_name(involved: &ObjectReference, note: &Note) -> String {
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    let hash = fnv1a(&[
        &o(&involved.api_version),
        &o(&involved.kind),
        &o(&involved.namespace),
        &o(&involved.name),
        &o(&involved.uid),
        &o(&involved.field_path),
        note.type_,
        note.reason,
        &note.message,
        note.component,
    ]);
    let name = involved.name.as_deref().unwrap_or("object");
    let mut end = name.len().min(MAX_PREFIX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}.{hash:016x}", &name[..end])
}

/// A new Event (`count: 1`) saying `note` about `involved` at `now`.
pub fn new_event(involved: ObjectReference, note: &Note, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(&involved, note)),
            namespace: Some(namespace_of(&involved)),
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
    }
}

/// `existing` after one more occurrence at `now`: the count and last time
/// bumped when its last occurrence is within [`SERIES_WINDOW`], else the
/// Event started again (its name and resourceVersion kept, so the replace
/// is of the same object).
pub fn repeated(existing: &Event, involved: ObjectReference, note: &Note, now: Timestamp) -> Event {
    let last = existing
        .last_timestamp
        .as_ref()
        .or(existing.first_timestamp.as_ref())
        .map(|t| t.0);
    let within = last.is_some_and(|last| now.duration_since(last) <= SERIES_WINDOW);
    let mut event = if within {
        let mut event = existing.clone();
        event.count = Some(existing.count.unwrap_or(1).saturating_add(1));
        event.last_timestamp = Some(Time(now));
        event
    } else {
        new_event(involved, note, now)
    };
    event.metadata.name.clone_from(&existing.metadata.name);
    event
        .metadata
        .resource_version
        .clone_from(&existing.metadata.resource_version);
    event
}

/// Says `note` about `involved`: a new Event, or one more occurrence of
/// the Event that already says it.
pub async fn record(client: &Client, involved: ObjectReference, note: &Note) -> kube::Result<()> {
    let namespace = namespace_of(&involved);
    let api = Api::<Event>::namespaced(client.clone(), &namespace);
    let event = new_event(involved.clone(), note, Timestamp::now());
    let name = event.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(err),
    }
    // Said before: count it on the existing Event.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(existing) = api.get_opt(&name).await? else {
            // Deleted between the create and the read: say it afresh.
            return api.create(&PostParams::default(), &event).await.map(|_| ());
        };
        let updated = repeated(&existing, involved.clone(), note, Timestamp::now());
        match api.replace(&name, &PostParams::default(), &updated).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status))
                if (status.code == 409 || status.code == 404) && attempt < CONFLICT_RETRIES => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some("u-1".into()),
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

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_note_names_the_same_event_and_any_difference_another() {
        let name = event_name(&pod("web"), &note("0/1 nodes"));
        assert_eq!(name, event_name(&pod("web"), &note("0/1 nodes")));
        assert!(name.starts_with("web."));
        assert_eq!(name.len(), "web.".len() + 16);
        assert_ne!(name, event_name(&pod("web"), &note("0/2 nodes")));
        assert_ne!(name, event_name(&pod("api"), &note("0/1 nodes")));
        let mut other_uid = pod("web");
        other_uid.uid = Some("u-2".into());
        assert_ne!(name, event_name(&other_uid, &note("0/1 nodes")));
        let mut normal = note("0/1 nodes");
        normal.type_ = "Normal";
        assert_ne!(name, event_name(&pod("web"), &normal));
        // A long object name is cut so the Event's name stays valid.
        let long = "a".repeat(253);
        assert_eq!(event_name(&pod(&long), &note("x")).len(), 253);
    }

    #[test]
    fn cluster_scoped_objects_have_their_events_in_default() {
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            ..ObjectReference::default()
        };
        assert_eq!(namespace_of(&node), "default");
        assert_eq!(namespace_of(&pod("web")), "default");
    }

    #[test]
    fn a_repeat_within_the_window_bumps_count_and_last_timestamp() {
        let first = at("2026-01-01T00:00:00Z");
        let mut existing = new_event(pod("web"), &note("m"), first);
        existing.metadata.resource_version = Some("7".into());
        let second = repeated(
            &existing,
            pod("web"),
            &note("m"),
            at("2026-01-01T00:01:00Z"),
        );
        assert_eq!(second.count, Some(2));
        assert_eq!(second.first_timestamp, Some(Time(first)));
        assert_eq!(
            second.last_timestamp,
            Some(Time(at("2026-01-01T00:01:00Z")))
        );
        assert_eq!(second.metadata.resource_version.as_deref(), Some("7"));
        let third = repeated(&second, pod("web"), &note("m"), at("2026-01-01T00:10:30Z"));
        assert_eq!(third.count, Some(3));
        assert_eq!(third.first_timestamp, Some(Time(first)));
    }

    #[test]
    fn a_repeat_after_the_window_starts_the_event_again() {
        let mut existing = new_event(pod("web"), &note("m"), at("2026-01-01T00:00:00Z"));
        existing.count = Some(4);
        existing.metadata.resource_version = Some("9".into());
        let later = at("2026-01-01T00:10:01Z");
        let again = repeated(&existing, pod("web"), &note("m"), later);
        assert_eq!(again.count, Some(1));
        assert_eq!(again.first_timestamp, Some(Time(later)));
        assert_eq!(again.last_timestamp, Some(Time(later)));
        assert_eq!(again.metadata.name, existing.metadata.name);
        assert_eq!(again.metadata.resource_version.as_deref(), Some("9"));
    }
}
