//! The lab's daemons: started in their own session with their output in a
//! log file and a `KNIT_LAB=<name>` marker in their environment, found
//! again (by that marker, or by living in one of the lab's namespaces, as
//! the agents' pod processes do) and stopped.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knit_node_agent::netns::RUN_DIR;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::io;
use crate::{Error, Result};

/// The environment variable that marks a lab's daemons.
pub const LAB_ENV: &str = "KNIT_LAB";

/// How long stopped processes get between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Starts `bin args...` in a session of its own (`setsid`, which execs in
/// place, so the pid is the daemon's), stdin from /dev/null, stdout and
/// stderr appended to `log`, marked as lab `lab`'s.
pub fn spawn(what: &str, bin: &Path, args: &[String], log: &Path, lab: &str) -> Result<Child> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("open", log))?;
    let err = file.try_clone().map_err(io("open", log))?;
    Command::new("setsid")
        .arg(bin)
        .args(args)
        .env(LAB_ENV, lab)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            what: what.to_string(),
            source,
        })
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The (device, inode) pairs of the named namespaces `names`.
fn namespace_ids(names: &[String]) -> HashSet<(u64, u64)> {
    names
        .iter()
        .filter_map(|n| fs::metadata(Path::new(RUN_DIR).join(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// The processes of lab `lab`: marked with its name, or with a thread in
/// one of `namespaces`. Never this process.
pub fn find(lab: &str, namespaces: &[String]) -> Vec<u32> {
    let marker = format!("{LAB_ENV}={lab}");
    let ids = namespace_ids(namespaces);
    let me = std::process::id();
    let mut found = BTreeSet::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let marked = fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
            .unwrap_or(false);
        if marked || in_namespaces(pid, &ids) {
            found.insert(pid);
        }
    }
    found.into_iter().collect()
}

/// Whether any thread of `pid` is in one of the namespaces `ids` (an
/// agent may enter a node's namespace on some threads only).
fn in_namespaces(pid: u32, ids: &HashSet<(u64, u64)>) -> bool {
    if ids.is_empty() {
        return false;
    }
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        fs::metadata(task.path().join("ns/net")).is_ok_and(|m| ids.contains(&(m.dev(), m.ino())))
    })
}

/// Sends `signal` to each of `pids` (gone ones are skipped).
pub fn signal_all(pids: &[u32], signal: Signal) {
    for &pid in pids {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), signal);
        }
    }
}

/// Waits until none of `pids` is alive or `limit` has passed; the ones
/// still alive.
pub fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops every process of lab `lab` (see [`find`]; recorded pids are not
/// trusted on their own, a pid may have been reused since): SIGTERM,
/// [`TERM_GRACE`], then SIGKILL for what is left and whatever appeared
/// meanwhile. Returns the pids stopped.
pub fn stop_all(lab: &str, namespaces: &[String]) -> Vec<u32> {
    let mut stopped = BTreeSet::new();
    let first = find(lab, namespaces);
    signal_all(&first, Signal::SIGTERM);
    stopped.extend(first.iter().copied());
    wait_gone(&first, TERM_GRACE);
    // A few rounds: an agent killed late may have started a pod process.
    for _ in 0..5 {
        let left = find(lab, namespaces);
        if left.is_empty() {
            break;
        }
        signal_all(&left, Signal::SIGKILL);
        stopped.extend(left.iter().copied());
        wait_gone(&left, Duration::from_secs(2));
    }
    stopped.into_iter().collect()
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
