//! The agent's HTTP endpoint, as the kubelet's: `/healthz`, `/metrics`
//! (Prometheus, e.g. the service proxy's sync metrics) and
//! `GET /containerLogs/{namespace}/{pod}/{container}` with the `pods/log`
//! options (`follow`, `tailLines`, `timestamps`, `previous`,
//! `sinceSeconds`, `sinceTime`, `limitBytes`), which the API server's
//! `pods/log` proxies to.
//!
//! Log files are read as the kubelet's CRI format, one record a line:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>` (`P` for a partial
//! line that the next record continues). A line not in that format is
//! taken as plain text with no time, so a runtime writing raw output
//! still gets its logs served.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::jiff::Timestamp;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::containers::Containers;

/// How often a followed log file is looked at for more.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The query of a `/containerLogs` request.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep the response open and send what is written.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// Prefix each line with its time.
    #[serde(default)]
    pub timestamps: bool,
    /// The previous (terminated) run of the container.
    #[serde(default)]
    pub previous: bool,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines at or after this time (RFC 3339).
    pub since_time: Option<String>,
    /// At most this many bytes.
    pub limit_bytes: Option<i64>,
}

/// One record of a log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it was written, if the file says.
    pub time: Option<Timestamp>,
    /// The text.
    pub text: String,
    /// Whether the line ends here (`F`) or continues in the next record.
    pub full: bool,
}

/// Parses one line of a log file (without its newline).
pub fn parse_line(line: &str) -> Record {
    let plain = || Record {
        time: None,
        text: line.to_string(),
        full: true,
    };
    let mut parts = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return plain();
    };
    let Ok(time) = time.parse::<Timestamp>() else {
        return plain();
    };
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
        return plain();
    }
    Record {
        time: Some(time),
        text: parts.next().unwrap_or_default().to_string(),
        full: tag == "F",
    }
}

/// The lower time bound the options ask for.
fn since(options: &LogOptions, now: Timestamp) -> Option<Timestamp> {
    let from_seconds = options.since_seconds.and_then(|s| {
        now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
            .ok()
    });
    let from_time = options
        .since_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok());
    from_seconds.or(from_time)
}

/// The bytes to send for `records` under `options` (before `limitBytes`):
/// records older than the `since` bound dropped, then the last
/// `tailLines` lines, each with its time when `timestamps` is asked.
pub fn render(records: &[Record], options: &LogOptions, now: Timestamp) -> Vec<u8> {
    let bound = since(options, now);
    let kept: Vec<&Record> = records
        .iter()
        .filter(|r| match (bound, r.time) {
            (Some(b), Some(t)) => t >= b,
            _ => true,
        })
        .collect();
    // Lines end at full records; tailLines counts lines, not records.
    let mut starts = vec![0];
    for (i, r) in kept.iter().enumerate() {
        if r.full && i + 1 < kept.len() {
            starts.push(i + 1);
        }
    }
    let first = match options.tail_lines {
        Some(n) if n >= 0 => {
            let n = n as usize;
            if n == 0 {
                kept.len()
            } else if n >= starts.len() {
                0
            } else {
                starts[starts.len() - n]
            }
        }
        _ => 0,
    };
    let mut out = Vec::new();
    let mut line_start = true;
    for r in &kept[first..] {
        if options.timestamps && line_start {
            let time = r.time.map(format_time).unwrap_or_default();
            out.extend_from_slice(time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.text.as_bytes());
        if r.full {
            out.push(b'\n');
        }
        line_start = r.full;
    }
    out
}

/// RFC 3339 with nanoseconds, as the kubelet prints times.
fn format_time(t: Timestamp) -> String {
    format!("{t:.9}")
}

/// The router: `/healthz`, `/containerLogs/...` and `/metrics` (the
/// agent's Prometheus metrics, from `metrics`).
pub fn router<C: Containers>(containers: Arc<C>, metrics: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs::<C>),
        )
        .with_state(containers)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { serve_metrics(&metrics) }
            }),
        )
}

/// The registry in the OpenMetrics text format.
fn serve_metrics(metrics: &Registry) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, metrics).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn container_logs<C: Containers>(
    State(containers): State<Arc<C>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(options): Query<LogOptions>,
) -> Response {
    let Some(path) = containers.log_file(&namespace, &pod, &container, options.previous) else {
        let what = if options.previous {
            "previous terminated container"
        } else {
            "container"
        };
        return (
            StatusCode::NOT_FOUND,
            format!("{what} \"{container}\" in pod \"{pod}\" not found\n"),
        )
            .into_response();
    };
    let data = match tokio::fs::read(&path).await {
        Ok(data) => data,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the log of {container}: {err}\n"),
            )
                .into_response();
        }
    };
    // Only whole lines now; a trailing unterminated one is read again
    // when following.
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut records: Vec<Record> = String::from_utf8_lossy(&data[..complete])
        .lines()
        .map(parse_line)
        .collect();
    if !options.follow && complete < data.len() {
        records.push(parse_line(&String::from_utf8_lossy(&data[complete..])));
    }
    let first = render(&records, &options, Timestamp::now());
    let limit = options.limit_bytes.filter(|n| *n > 0).map(|n| n as usize);
    let text = [(header::CONTENT_TYPE, "text/plain")];
    if !options.follow {
        let mut first = first;
        if let Some(limit) = limit {
            first.truncate(limit);
        }
        return (text, first).into_response();
    }
    let follower = Follower {
        containers,
        key: (namespace, pod, container),
        path,
        offset: complete as u64,
        options,
        first: Some(first),
        sent: 0,
        limit,
        line_start: true,
    };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        f.next()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), f))
    });
    (text, Body::from_stream(stream)).into_response()
}

/// A followed log: what is there first, then what is written, until the
/// runtime stops naming the file (the container or pod is gone).
struct Follower<C> {
    containers: Arc<C>,
    key: (String, String, String),
    path: PathBuf,
    offset: u64,
    options: LogOptions,
    first: Option<Vec<u8>>,
    sent: usize,
    limit: Option<usize>,
    line_start: bool,
}

impl<C: Containers> Follower<C> {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.limit.is_some_and(|l| self.sent >= l) {
                return None;
            }
            let mut chunk = match self.first.take() {
                Some(first) => first,
                None => self.more().await?,
            };
            if chunk.is_empty() {
                continue;
            }
            if let Some(limit) = self.limit {
                chunk.truncate(limit - self.sent);
            }
            self.sent += chunk.len();
            return Some(chunk);
        }
    }

    /// The next whole lines written to the file, waiting for them.
    async fn more(&mut self) -> Option<Vec<u8>> {
        loop {
            let (ns, pod, container) = &self.key;
            let now = self
                .containers
                .log_file(ns, pod, container, self.options.previous);
            if now.as_ref() != Some(&self.path) {
                return None;
            }
            let mut file = tokio::fs::File::open(&self.path).await.ok()?;
            let len = file.metadata().await.ok()?.len();
            if len < self.offset {
                // Truncated or replaced: start again from its top.
                self.offset = 0;
            }
            if len > self.offset {
                file.seek(std::io::SeekFrom::Start(self.offset))
                    .await
                    .ok()?;
                let mut data = Vec::new();
                file.read_to_end(&mut data).await.ok()?;
                if let Some(end) = data.iter().rposition(|b| *b == b'\n') {
                    self.offset += end as u64 + 1;
                    let mut out = Vec::new();
                    for line in String::from_utf8_lossy(&data[..=end]).lines() {
                        let r = parse_line(line);
                        if self.options.timestamps && self.line_start {
                            out.extend_from_slice(
                                r.time.map(format_time).unwrap_or_default().as_bytes(),
                            );
                            out.push(b' ');
                        }
                        out.extend_from_slice(r.text.as_bytes());
                        if r.full {
                            out.push(b'\n');
                        }
                        self.line_start = r.full;
                    }
                    return Some(out);
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        [
            "2026-02-01T00:00:00.000000001Z stdout F one",
            "2026-02-01T00:00:10Z stderr P tw",
            "2026-02-01T00:00:10.5Z stderr F o",
            "2026-02-01T00:00:20Z stdout F three",
        ]
        .iter()
        .map(|l| parse_line(l))
        .collect()
    }

    fn now() -> Timestamp {
        "2026-02-01T00:00:25Z".parse().unwrap()
    }

    #[test]
    fn cri_lines_and_plain_lines() {
        let r = parse_line("2026-02-01T00:00:10Z stderr P tw");
        assert_eq!(r.text, "tw");
        assert!(!r.full);
        assert!(r.time.is_some());
        let r = parse_line("Hello from web-1");
        assert_eq!(
            (r.time, r.text.as_str(), r.full),
            (None, "Hello from web-1", true)
        );
        assert_eq!(parse_line("2026-02-01T00:00:10Z stdout F ").text, "");
    }

    #[test]
    fn options_select_and_decorate() {
        let all = LogOptions::default();
        assert_eq!(render(&records(), &all, now()), b"one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        assert_eq!(render(&records(), &tail, now()), b"two\nthree\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..LogOptions::default()
        };
        assert_eq!(render(&records(), &none, now()), b"");
        let recent = LogOptions {
            since_seconds: Some(10),
            ..LogOptions::default()
        };
        assert_eq!(render(&records(), &recent, now()), b"three\n");
        let stamped = LogOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        assert_eq!(
            String::from_utf8(render(&records(), &stamped, now())).unwrap(),
            "2026-02-01T00:00:10.000000000Z two\n2026-02-01T00:00:20.000000000Z three\n"
        );
    }
}
