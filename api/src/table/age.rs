//! Ages and durations as kube-apiserver prints them in Table cells: the
//! `duration.HumanDuration` shape (`45s`, `2m30s`, `3h`, `5d`, `2y30d`) and
//! `<unknown>` for a missing timestamp.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The cell for a missing or unreadable timestamp.
pub const UNKNOWN: &str = "<unknown>";

/// Formats a duration with two or three significant figures, as
/// Kubernetes' `duration.HumanDuration`: seconds up to two minutes, then
/// minutes (with seconds below ten minutes), hours (with minutes below
/// eight hours), days (with hours below eight days), then years.
///
/// A clock up to a second behind reads as `0s`; further in the future is
/// `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    // Truncation toward zero, as Go's int(d.Seconds()).
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_rest(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_rest(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `5m` or `5m30s`: the smaller unit only when it is not zero.
fn with_rest(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// Reads an RFC 3339 timestamp (`metav1.Time` or `MicroTime`).
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The time elapsed from `then` to `now`, as a cell.
pub fn since(then: Option<Timestamp>, now: Timestamp) -> String {
    match then {
        Some(then) => human_duration(now.duration_since(then)),
        None => UNKNOWN.into(),
    }
}

/// The AGE cell of an object: the time since `metadata.creationTimestamp`.
pub fn age(object: &serde_json::Value, now: Timestamp) -> String {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_time);
    since(created, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn durations_read_as_kubectl_prints_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60 + 30, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600 + 59 * 60, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (5 * 86400 + 3 * 3600, "5d3h"),
            (8 * 86400 + 3 * 3600, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 40 * 86400, "3y40d"),
            (9 * 365 * 86400 + 40 * 86400, "9y"),
        ];
        for (input, want) in cases {
            assert_eq!(secs(input), want, "{input}s");
        }
    }

    #[test]
    fn fractions_truncate_toward_zero() {
        assert_eq!(human_duration(SignedDuration::from_millis(1999)), "1s");
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
    }

    #[test]
    fn ages_count_from_the_creation_timestamp() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let object = serde_json::json!({"metadata": {"creationTimestamp": "2024-05-01T11:57:30Z"}});
        assert_eq!(age(&object, now), "2m30s");
        assert_eq!(age(&serde_json::json!({"metadata": {}}), now), "<unknown>");
        assert_eq!(since(parse_time("2024-05-01T11:59:59.500000Z"), now), "0s");
    }
}
