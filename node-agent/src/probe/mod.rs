//! Container probes: startup, liveness and readiness, as kubelet runs them.
//!
//! [`ProbeConfig`] reads a spec's `Probe` with Kubernetes' defaults
//! (`initialDelaySeconds` 0, `periodSeconds` 10, `timeoutSeconds` 1,
//! `successThreshold` 1, `failureThreshold` 3); [`ProbeState`] is the pure
//! state machine of one probe of one container run (when it is due, how
//! consecutive results turn into a verdict); [`run`] performs one check
//! (`httpGet`, `tcpSocket`, `exec`) and blocks, so the runtime calls it on
//! a thread of its own.
//!
//! What a verdict means is the runtime's business: readiness sets the
//! container's `ready`; a failed liveness or startup verdict restarts the
//! container; liveness and readiness are not run before the startup probe
//! has succeeded.

mod run;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use run::{Target, run};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `startupProbe`: gates the other two; failing restarts.
    Startup,
    /// `livenessProbe`: failing restarts the container.
    Liveness,
    /// `readinessProbe`: decides `ready`.
    Readiness,
}

impl Kind {
    /// How kubelet names it in event messages (`Liveness probe failed: ...`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A port as a probe names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A number.
    Number(i32),
    /// The name of one of the container's ports.
    Name(String),
}

impl PortRef {
    fn from_spec(port: &IntOrString) -> Self {
        match port {
            IntOrString::Int(n) => PortRef::Number(*n),
            IntOrString::String(s) => match s.parse() {
                Ok(n) => PortRef::Number(n),
                Err(_) => PortRef::Name(s.clone()),
            },
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `httpGet`: a status from 200 to 399 is a success.
    Http {
        /// `host`, the pod IP when unset.
        host: Option<String>,
        /// `port`.
        port: PortRef,
        /// `path`, `/` when unset.
        path: String,
        /// `scheme` (`HTTP`; knit does not speak `HTTPS` to probes).
        scheme: String,
        /// `httpHeaders`.
        headers: Vec<(String, String)>,
    },
    /// `tcpSocket`: a connection that opens is a success.
    Tcp {
        /// `host`, the pod IP when unset.
        host: Option<String>,
        /// `port`.
        port: PortRef,
    },
    /// `exec`: exit code 0 is a success.
    Exec {
        /// `command`, run in the container's namespaces.
        command: Vec<String>,
    },
    /// Something knit cannot check (`grpc`, no handler); always fails
    /// with this message.
    Unsupported(String),
}

/// One probe of a container's spec, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Which probe.
    pub kind: Kind,
    /// What it checks.
    pub action: Action,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
    /// The probe's `terminationGracePeriodSeconds`, which overrides the
    /// pod's when this probe kills the container.
    pub termination_grace: Option<Duration>,
}

fn seconds(value: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64).max(min))
}

impl ProbeConfig {
    /// Reads a spec's probe.
    pub fn from_spec(kind: Kind, probe: &Probe) -> Self {
        let action = if let Some(http) = &probe.http_get {
            Action::Http {
                host: http.host.clone().filter(|h| !h.is_empty()),
                port: PortRef::from_spec(&http.port),
                path: http
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/".into()),
                scheme: http.scheme.clone().unwrap_or("HTTP".into()),
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            Action::Tcp {
                host: tcp.host.clone().filter(|h| !h.is_empty()),
                port: PortRef::from_spec(&tcp.port),
            }
        } else if let Some(exec) = &probe.exec {
            Action::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else if probe.grpc.is_some() {
            Action::Unsupported("gRPC probes are not supported by knit".into())
        } else {
            Action::Unsupported("the probe has no handler".into())
        };
        let success_threshold = match kind {
            Kind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
            Kind::Liveness | Kind::Startup => 1,
        };
        ProbeConfig {
            kind,
            action,
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            termination_grace: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// A probe of one container run: its counters, verdict and schedule.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// The probe.
    pub config: ProbeConfig,
    successes: u32,
    failures: u32,
    verdict: bool,
    next_at: Instant,
}

impl ProbeState {
    /// A probe for a run that started at `started`. Readiness and startup
    /// begin failed (not ready, not started), liveness passed, as kubelet
    /// has them.
    pub fn new(config: ProbeConfig, started: Instant) -> Self {
        let verdict = config.kind == Kind::Liveness;
        let next_at = started + config.initial_delay;
        ProbeState {
            config,
            successes: 0,
            failures: 0,
            verdict,
            next_at,
        }
    }

    /// Readiness and startup resumed with a known verdict (a re-adopted
    /// container that was ready keeps being ready until a probe says no).
    pub fn with_verdict(mut self, verdict: bool) -> Self {
        self.verdict = verdict;
        self
    }

    /// Whether a check is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// A check starts at `now`: the next one is a period later.
    pub fn started_check(&mut self, now: Instant) {
        self.next_at = now + self.config.period;
    }

    /// The verdict: ready, alive, or started.
    pub fn verdict(&self) -> bool {
        self.verdict
    }

    /// Records one check's result; returns the new verdict when it changed.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.verdict && self.successes >= self.config.success_threshold {
                self.verdict = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.verdict && self.failures >= self.config.failure_threshold {
                self.verdict = false;
                return Some(false);
            }
            // Startup (and a readiness not yet passed) fails by threshold
            // from the start, too.
            if !self.verdict
                && self.config.kind == Kind::Startup
                && self.failures == self.config.failure_threshold
            {
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(value: serde_json::Value) -> Probe {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_are_kubernetes() {
        let config = ProbeConfig::from_spec(
            Kind::Readiness,
            &probe(json!({"httpGet": {"port": "http"}})),
        );
        assert_eq!(config.initial_delay, Duration::ZERO);
        assert_eq!(config.period, Duration::from_secs(10));
        assert_eq!(config.timeout, Duration::from_secs(1));
        assert_eq!((config.success_threshold, config.failure_threshold), (1, 3));
        assert_eq!(
            config.action,
            Action::Http {
                host: None,
                port: PortRef::Name("http".into()),
                path: "/".into(),
                scheme: "HTTP".into(),
                headers: vec![],
            }
        );
        let live = ProbeConfig::from_spec(
            Kind::Liveness,
            &probe(json!({"tcpSocket": {"port": 80}, "successThreshold": 5, "periodSeconds": 2})),
        );
        assert_eq!(live.success_threshold, 1, "liveness needs one success");
        assert_eq!(live.period, Duration::from_secs(2));
        assert!(matches!(
            ProbeConfig::from_spec(Kind::Liveness, &probe(json!({"grpc": {"port": 9}}))).action,
            Action::Unsupported(_)
        ));
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let now = Instant::now();
        let config = ProbeConfig::from_spec(
            Kind::Readiness,
            &probe(json!({"exec": {"command": ["true"]}, "successThreshold": 2,
                          "failureThreshold": 2, "initialDelaySeconds": 5})),
        );
        let mut ready = ProbeState::new(config, now);
        assert!(!ready.verdict());
        assert!(!ready.due(now) && ready.due(now + Duration::from_secs(5)));
        assert_eq!(ready.record(true), None);
        assert_eq!(ready.record(true), Some(true));
        assert_eq!(ready.record(false), None);
        assert_eq!(ready.record(true), None, "a success resets the failures");
        assert_eq!(ready.record(false), None);
        assert_eq!(ready.record(false), Some(false));
        assert_eq!(ready.record(false), None, "reported once");

        let live =
            ProbeConfig::from_spec(Kind::Liveness, &probe(json!({"exec": {"command": ["x"]}})));
        let mut live = ProbeState::new(live, now);
        assert!(live.verdict());
        assert_eq!((live.record(false), live.record(false)), (None, None));
        assert_eq!(live.record(false), Some(false));

        let startup = ProbeConfig::from_spec(
            Kind::Startup,
            &probe(json!({"exec": {"command": ["x"]}, "failureThreshold": 2})),
        );
        let mut startup = ProbeState::new(startup, now);
        assert_eq!(startup.record(false), None);
        assert_eq!(startup.record(false), Some(false), "never started: give up");
        let mut startup2 = ProbeState::new(startup.config.clone(), now);
        assert_eq!(startup2.record(true), Some(true));
    }
}
