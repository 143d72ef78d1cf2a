//! What every root test of the node agent starts from: whether it may run
//! (root, or a failure when CI demands it), a short tag for the names of
//! the namespaces it makes, and commands run for their output.

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, ensure};

/// Whether the test can run: it needs root; without it the test prints
/// `SKIP: needs root` and passes, unless `CI=true`, where that is a failure.
pub fn have_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs root, and CI=true");
    }
    println!("SKIP: needs root");
    false
}

/// A short tag unique to one test of this process (`prefix`, the pid, a
/// letter), so namespace and interface names stay short and never collide
/// with another run's.
pub fn tag(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        (b'a' + (n % 26) as u8) as char
    )
}

/// Runs `program ARGS...` and returns its stdout; fails with its stderr.
pub fn cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS...` and returns its stdout; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    cmd("ip", args)
}

/// Polls `f` every 20 ms until it gives `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() <= deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
