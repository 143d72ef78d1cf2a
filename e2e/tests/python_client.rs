//! The official Python `kubernetes` client against a real `knit server`:
//! `e2e/python/client_session.py` runs create, get, list, strategic and JSON
//! patches, resumed and live watches, and deletes for pods, services,
//! endpoints, endpointslices and ingresses, and checks each answer.
//!
//! Without the `kubernetes` package the test prints a SKIP line and passes,
//! except under `CI=true` (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use knit_e2e::KnitServer;

/// The whole Python session must finish within this.
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn python_client_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Python kubernetes client must be installed under CI=true (pip install kubernetes)"
        );
        eprintln!("SKIP: the Python kubernetes client is not installed (pip install kubernetes)");
    }
    found
}

#[tokio::test]
async fn python_client_session() {
    if !python_client_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The session checks exact watch event sequences of the objects it
    // writes; controllers (the scheduler marking its pods unschedulable on
    // a cluster without nodes) would add their own writes to them.
    let server = KnitServer::start_with_args(dir.path(), &["--no-controllers"])
        .await
        .expect("knit server starts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_session.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(server.data_dir().join("admin.kubeconfig"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TIME_LIMIT, child)
        .await
        .expect("the Python session finishes in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python session failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_tail(4096)
    );
    for kind in ["pod", "svc", "ep", "slice", "ing", "all"] {
        assert!(
            stdout.contains(&format!("ok: {kind}\n")),
            "{kind} not checked:\n{stdout}"
        );
    }
}
