//! The pure part of the runtime: what a container's spec means as a
//! process (its environment, with Kubernetes' `$(VAR)` expansion and
//! `fieldRef`s, and its command line), the restart back-off, and the pod
//! phase by kubelet's rules. No I/O here; everything is unit-tested.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, EnvVar, Pod};

/// The `PATH` a container gets unless its `env` sets one (the default of
/// container runtimes).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$(NAME)` references in `input` as Kubernetes does: a defined
/// name is replaced by its value, `$$` is an escaped `$`, and anything
/// else (an undefined name, an unclosed `$(`, a lone `$`) stays as it is.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` path on the pod (`metadata.name`,
/// `metadata.namespace`, `metadata.uid`, `metadata.labels['k']`,
/// `metadata.annotations['k']`, `spec.nodeName`, `spec.serviceAccountName`,
/// `status.podIP`, `status.podIPs`, `status.hostIP`, `status.hostIPs`).
/// `pod_ip` is the sandbox's, which the pod's status may not carry yet.
pub fn field_ref(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map?.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => status.and_then(|s| {
            s.host_ips.as_ref().map(|ips| {
                ips.iter()
                    .map(|ip| ip.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref())),
    }
}

/// A container's environment, in order: `HOSTNAME` and a default `PATH`
/// (as container runtimes set them), then the spec's `env`, each value
/// expanded against the variables defined before it. `fieldRef`s resolve
/// against the pod; references the node cannot resolve alone
/// (`configMapKeyRef`, `secretKeyRef`, `resourceFieldRef`) are left out.
pub fn environment(pod: &Pod, container: &Container, pod_ip: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname(pod)),
    ];
    let mut defined: HashMap<String, String> = vars.iter().cloned().collect();
    for EnvVar {
        name,
        value,
        value_from,
    } in container.env.iter().flatten()
    {
        let resolved = match (value, value_from) {
            (Some(value), _) => Some(expand(value, |n| defined.get(n).cloned())),
            (None, Some(from)) => from
                .field_ref
                .as_ref()
                .map(|field| field_ref(pod, &field.field_path, pod_ip).unwrap_or_default()),
            (None, None) => Some(String::new()),
        };
        let Some(resolved) = resolved else { continue };
        defined.insert(name.clone(), resolved.clone());
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = resolved,
            None => vars.push((name.clone(), resolved)),
        }
    }
    vars
}

/// The process's argv: `command` then `args`, each expanded against the
/// container's environment. Empty when the spec has neither (knit runs no
/// images, so there is no entrypoint to fall back on).
pub fn argv(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|arg| expand(arg, lookup))
        .collect()
}

/// The pod's hostname: its name, cut to the 63 bytes a hostname may have
/// (as kubelet cuts it), without a trailing `-` or `.`.
pub fn hostname(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("pod");
    let mut cut = name.to_string();
    if cut.len() > 63 {
        cut.truncate(63);
        while cut.ends_with('-') || cut.ends_with('.') {
            cut.pop();
        }
    }
    cut
}

/// The pod's restart policy, `Always` unless the spec says otherwise.
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether a container that exited with `code` is started again.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// kubelet's crash-loop back-off: the first restart is immediate, the next
/// ones wait `initial`, doubling up to `max`; a container that ran for
/// `reset` or longer starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (kubelet: 10 s).
    pub initial: Duration,
    /// The longest wait (kubelet: 5 min).
    pub max: Duration,
    /// How long a run must last for the back-off to start over (10 min).
    pub reset: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// After a run of `ran` ended with the back-off at `current`: how long
    /// to wait before the restart, and the back-off after it.
    pub fn next(&self, current: Duration, ran: Duration) -> (Duration, Duration) {
        let current = if ran >= self.reset {
            Duration::ZERO
        } else {
            current
        };
        if current.is_zero() {
            (Duration::ZERO, self.initial)
        } else {
            (current, (current * 2).min(self.max))
        }
    }
}

/// The pod phase by kubelet's rules, from the statuses of the spec's
/// containers and the restart policy.
pub fn phase(statuses: &[ContainerStatus], policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = status.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if done.exit_code == 0 {
                succeeded += 1;
            }
        } else if status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some()
        {
            // Waiting to be restarted after a run: counts as stopped.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if statuses.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == statuses.len() {
        return match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };
    use serde_json::json;

    fn defined(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        assert_eq!(expand("x $(A) y", defined), "x alpha y");
        assert_eq!(expand("$(A)$(A)", defined), "alphaalpha");
        assert_eq!(expand("$(B)", defined), "$(B)");
        assert_eq!(expand("$$(A)", defined), "$(A)");
        assert_eq!(expand("$$$(A)", defined), "$alpha");
        assert_eq!(expand("cost $5", defined), "cost $5");
        assert_eq!(expand("$(A", defined), "$(A");
        assert_eq!(expand("tail $", defined), "tail $");
        assert_eq!(expand("[$(EMPTY)]", defined), "[]");
        assert_eq!(
            expand("echo \"Hello from $(hostname)\"", defined),
            "echo \"Hello from $(hostname)\""
        );
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{
                "name": "c",
                "command": ["sh", "-c"],
                "args": ["echo $(GREETING) $(POD) $(MISSING) $$(POD)"],
                "env": [
                    {"name": "WHO", "value": "world"},
                    {"name": "GREETING", "value": "hello $(WHO)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ]
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn environment_and_argv() {
        let pod = pod();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env = environment(&pod, container, "10.0.1.2");
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("HOSTNAME"), Some("web-1"));
        assert_eq!(get("GREETING"), Some("hello world"));
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("NS"), Some("shop"));
        assert_eq!(get("IP"), Some("10.0.1.2"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("SECRET"), None);
        assert_eq!(
            argv(container, &env),
            ["sh", "-c", "echo hello world web-1 $(MISSING) $(POD)"]
        );
    }

    #[test]
    fn long_names_make_valid_hostnames() {
        let mut pod = pod();
        pod.metadata.name = Some(format!("{}-x", "a".repeat(62)));
        assert_eq!(hostname(&pod), "a".repeat(62));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::default();
        let short = Duration::from_secs(1);
        let (wait, next) = b.next(Duration::ZERO, short);
        assert_eq!((wait, next), (Duration::ZERO, Duration::from_secs(10)));
        let (wait, next) = b.next(next, short);
        assert_eq!(
            (wait, next),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
        let (wait, next) = b.next(Duration::from_secs(160), short);
        assert_eq!(
            (wait, next),
            (Duration::from_secs(160), Duration::from_secs(300))
        );
        let (wait, _) = b.next(Duration::from_secs(300), short);
        assert_eq!(wait, Duration::from_secs(300));
        let (wait, next) = b.next(Duration::from_secs(300), Duration::from_secs(600));
        assert_eq!((wait, next), (Duration::ZERO, Duration::from_secs(10)));
    }

    fn status(state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }
    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }
    fn done(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn waiting() -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }
    }

    #[test]
    fn phase_by_kubelets_rules() {
        assert_eq!(phase(&[], "Always"), "Pending");
        assert_eq!(phase(&[status(waiting(), None)], "Always"), "Pending");
        assert_eq!(
            phase(
                &[status(running(), None), status(waiting(), None)],
                "Always"
            ),
            "Pending"
        );
        assert_eq!(
            phase(&[status(running(), None), status(done(1), None)], "Never"),
            "Running"
        );
        assert_eq!(
            phase(&[status(waiting(), Some(done(1)))], "Always"),
            "Running"
        );
        assert_eq!(
            phase(&[status(done(0), None), status(done(0), None)], "Never"),
            "Succeeded"
        );
        assert_eq!(
            phase(&[status(done(0), None), status(done(2), None)], "Never"),
            "Failed"
        );
        assert_eq!(phase(&[status(done(0), None)], "OnFailure"), "Succeeded");
        assert_eq!(
            phase(&[status(waiting(), Some(done(1)))], "OnFailure"),
            "Running"
        );
        assert!(restarts("Always", 0) && restarts("OnFailure", 1));
        assert!(!restarts("OnFailure", 0) && !restarts("Never", 1));
    }
}
