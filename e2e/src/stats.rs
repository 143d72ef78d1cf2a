//! Small measurements the benchmarks share: latency percentiles and what a
//! process costs (CPU seconds, memory) read from `/proc`.

use std::time::Duration;

/// Whole microseconds of `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The `p`th percentile of sorted microseconds, in milliseconds (NaN if empty).
pub fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[rank.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Prints one latency line (`label`, count, p50, p99, max in ms with
/// `decimals` places) of `us` microseconds; returns p50 and p99.
pub fn summary(label: &str, mut us: Vec<u64>, decimals: usize) -> (f64, f64) {
    us.sort_unstable();
    let (p50, p99) = (percentile(&us, 50.0), percentile(&us, 99.0));
    let max = us.last().copied().unwrap_or(0) as f64 / 1000.0;
    let n = us.len();
    println!(
        "  {label:<40} n={n:<5} p50 {p50:>8.decimals$} ms   p99 {p99:>8.decimals$} ms   max {max:>8.decimals$} ms"
    );
    (p50, p99)
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/PID/stat` (in USER_HZ = 100 ticks per second on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's memory from `/proc/PID/status`, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub resident: f64,
    /// The most it has been resident (`VmHWM`).
    pub peak: f64,
}

/// The memory of process `pid`; zeros if it is gone.
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    };
    Memory {
        resident: mib("VmRSS:"),
        peak: mib("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 51.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = memory(std::process::id());
        assert!(me.resident > 0.0 && me.peak >= me.resident);
        assert!(cpu_seconds(std::process::id()) >= 0.0);
        assert_eq!(memory(u32::MAX).resident, 0.0);
    }
}
