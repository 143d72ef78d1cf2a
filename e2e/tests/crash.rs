//! Crash test: acknowledged writes survive SIGKILL.
//!
//! Sixteen clients create ConfigMaps with unique names against a real
//! `knit server`. After a random number of acknowledged creates (100..=900,
//! from a seed printed at the start; `KNIT_CRASH_SEED` replays one) the server
//! is killed with SIGKILL while requests are in flight. It is restarted on the
//! same data directory, and the clients go on until 1,000 creates have been
//! acknowledged. A create whose connection died is retried after the restart:
//! 201 means it had not committed, 409 AlreadyExists that it had
//! (committed but never acknowledged).
//!
//! Checked after the restart and again at the end: every acknowledged object
//! is listed exactly once with the uid and resourceVersion its create
//! returned; names, uids and resourceVersions are unique, the versions are
//! integers, nothing unknown appears, and the server's revision did not go
//! back. At the end the count is exactly acked + committed-but-unacked, and a
//! clean SIGTERM shutdown and restart changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use hyper::StatusCode;
use knit_e2e::{HttpClient, HttpError, KnitServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Acknowledged creates the test makes in total.
const TOTAL_ACKS: usize = 1000;
/// Creates in flight at once.
const CONCURRENCY: usize = 16;
/// The whole test, both server runs included, must finish within this.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// A single request taking longer than this means the server hangs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Every object this test creates has a name with this prefix; anything else
/// in the namespace (made by controllers, say) is ignored.
const PREFIX: &str = "crash-";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() -> anyhow::Result<()> {
    let seed = match std::env::var("KNIT_CRASH_SEED") {
        Ok(s) => s
            .parse()
            .with_context(|| format!("KNIT_CRASH_SEED={s:?} is not a u64"))?,
        Err(_) => rand::random(),
    };
    let kill_after = StdRng::seed_from_u64(seed).random_range(100..=900);
    eprintln!(
        "crash test: seed {seed} (replay with KNIT_CRASH_SEED={seed}): SIGKILL after {kill_after} acks"
    );

    let dir = tempfile::Builder::new().prefix("knit-crash-").tempdir()?;
    let result = tokio::time::timeout(TIME_LIMIT, run(dir.path(), kill_after)).await;
    let result =
        result.unwrap_or_else(|_| Err(anyhow!("crash test took longer than {TIME_LIMIT:?}")));
    if let Err(e) = &result {
        // Keep the data dir and its server log for a look afterwards.
        let kept = dir.keep();
        eprintln!(
            "crash test failed (seed {seed}); data dir kept at {}",
            kept.display()
        );
        // A server that did not start already carries its log in the error.
        if e.downcast_ref::<knit_e2e::ServerError>().is_none() {
            let log = kept.join(knit_e2e::server::LOG_FILE);
            eprintln!("server log tail:\n{}", tail(&log, 4096));
        }
    }
    result
}

async fn run(dir: &Path, kill_after: usize) -> anyhow::Result<()> {
    let started = Instant::now();

    // Phase 1: write until the kill.
    let server = KnitServer::start(dir).await?;
    eprintln!("phase 1: knit pid {} on {}", server.pid(), server.addr());
    let shared = Arc::new(Shared::new(
        server.client(),
        Some(kill_after),
        Ledger::default(),
    ));
    let workers = spawn_workers(&shared);
    let killer = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            shared.kill_now.notified().await;
            shared.down.store(true, Ordering::SeqCst);
            server.kill()
        })
    };
    let joined = join(workers).await;
    if joined.is_err() {
        killer.abort();
    }
    joined?;
    let status = killer.await?;
    let mut ledger = take_ledger(shared);
    let acked_before_kill = ledger.acked.len();
    let max_acked_rv = ledger.acked.values().map(|s| s.rv).max().unwrap_or(0);
    let status = status.map_or_else(|| "already gone".to_owned(), |s| s.to_string());
    eprintln!(
        "phase 1: killed ({status}) with {acked_before_kill} acked, {} in doubt, max acked rv {max_acked_rv}, {:.1?} in",
        ledger.in_doubt.len(),
        started.elapsed()
    );

    // The restart must bring back every acknowledged object.
    let server = KnitServer::start(dir).await?;
    eprintln!("restarted: knit pid {} on {}", server.pid(), server.addr());
    let client = server.client();
    let (objects, list_rv) = list_all(&client).await?;
    ensure!(
        list_rv >= max_acked_rv,
        "after restart the list resourceVersion {list_rv} is below an acknowledged one ({max_acked_rv})"
    );
    verify(&objects, &ledger, false).context("right after the restart")?;
    eprintln!(
        "restart: {} objects listed, all {acked_before_kill} acked ones present, list rv {list_rv}",
        objects.len()
    );

    // Phase 2: resolve the in-doubt creates and go on to TOTAL_ACKS.
    ledger.retry = ledger.in_doubt.iter().cloned().collect();
    let shared = Arc::new(Shared::new(client.clone(), None, ledger));
    join(spawn_workers(&shared)).await?;
    let ledger = take_ledger(shared);
    ensure!(ledger.acked.len() == TOTAL_ACKS, "phase 2 ended early");
    let min_rv_after = ledger
        .acked
        .values()
        .filter(|s| s.after_restart)
        .map(|s| s.rv)
        .min();
    if let Some(rv) = min_rv_after {
        ensure!(
            rv > max_acked_rv,
            "a create after the restart got resourceVersion {rv}, not above the pre-crash {max_acked_rv}"
        );
    }
    let (objects, _) = list_all(&client).await?;
    verify(&objects, &ledger, true).context("at the end")?;
    eprintln!(
        "phase 2: {} acked, {} committed but unacknowledged, {} listed, {:.1?} in",
        ledger.acked.len(),
        ledger.maybe_committed.len(),
        objects.len(),
        started.elapsed()
    );

    // A clean shutdown and restart must not change anything either.
    let status = server.stop().await?;
    ensure!(
        status.success(),
        "knit server exited with {status} on SIGTERM"
    );
    let server = KnitServer::start(dir).await?;
    let (again, _) = list_all(&server.client()).await?;
    verify(&again, &ledger, true).context("after a clean restart")?;
    ensure!(again == objects, "objects changed across a clean restart");
    server.stop().await?;
    eprintln!("crash test passed in {:.1?}", started.elapsed());
    Ok(())
}

/// What the server returned for an acknowledged create.
#[derive(Debug, Clone)]
struct Stored {
    uid: String,
    rv: u64,
    after_restart: bool,
}

/// Everything the clients know about every name they tried.
#[derive(Debug, Default)]
struct Ledger {
    /// 201 Created, with what the server returned.
    acked: BTreeMap<String, Stored>,
    /// Sent, but the connection died before the answer: may have committed.
    in_doubt: BTreeSet<String>,
    /// In doubt, then 409 AlreadyExists on retry: committed, never acknowledged.
    maybe_committed: BTreeSet<String>,
    /// Names to retry in this phase.
    retry: Vec<String>,
    /// Names whose create has been sent at least once.
    attempted: HashSet<String>,
    /// Requests in flight.
    in_flight: usize,
    /// The number for the next fresh name.
    next: usize,
}

impl Ledger {
    /// The next name to create, or `None` when enough are acked or in flight.
    fn next_name(&mut self) -> Option<String> {
        let name = match self.retry.pop() {
            Some(name) => name,
            None if self.acked.len() + self.in_flight < TOTAL_ACKS => {
                self.next += 1;
                format!("{PREFIX}{:05}", self.next)
            }
            None => return None,
        };
        self.in_flight += 1;
        Some(name)
    }
}

struct Shared {
    client: HttpClient,
    ledger: Mutex<Ledger>,
    /// Phase 1: acks after which the server gets killed.
    kill_after: Option<usize>,
    kill_now: Notify,
    /// Set just before the SIGKILL: from then on, connection errors are expected.
    down: AtomicBool,
}

impl Shared {
    fn new(client: HttpClient, kill_after: Option<usize>, ledger: Ledger) -> Self {
        Shared {
            client,
            ledger: Mutex::new(ledger),
            kill_after,
            kill_now: Notify::new(),
            down: AtomicBool::new(false),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .expect("a worker panicked holding the ledger")
    }
}

fn take_ledger(shared: Arc<Shared>) -> Ledger {
    let shared = Arc::into_inner(shared).expect("all workers have finished");
    shared.ledger.into_inner().expect("ledger not poisoned")
}

fn spawn_workers(shared: &Arc<Shared>) -> JoinSet<anyhow::Result<()>> {
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        set.spawn(worker(Arc::clone(shared)));
    }
    set
}

async fn join(mut set: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(res) = set.join_next().await {
        // Dropping the set on the first error aborts the other workers.
        res??;
    }
    Ok(())
}

enum Outcome {
    Created(Value),
    AlreadyExists,
    ConnectionLost(String),
}

async fn worker(shared: Arc<Shared>) -> anyhow::Result<()> {
    let after_restart = shared.kill_after.is_none();
    loop {
        if shared.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(name) = shared.ledger().next_name() else {
            return Ok(());
        };
        let first_try = shared.ledger().attempted.insert(name.clone());
        let outcome = create(&shared.client, &name).await?;
        let mut ledger = shared.ledger();
        ledger.in_flight -= 1;
        match outcome {
            Outcome::Created(obj) => {
                let stored = stored_of(&obj, &name, after_restart)?;
                ledger.in_doubt.remove(&name);
                ledger.acked.insert(name, stored);
                if Some(ledger.acked.len()) == shared.kill_after {
                    shared.kill_now.notify_one();
                }
            }
            Outcome::AlreadyExists => {
                ensure!(
                    !first_try,
                    "409 AlreadyExists for {name}, which was never created before"
                );
                ledger.in_doubt.remove(&name);
                ledger.maybe_committed.insert(name);
            }
            Outcome::ConnectionLost(why) => {
                ensure!(
                    shared.down.load(Ordering::SeqCst),
                    "create {name} failed while the server should be up: {why}"
                );
                ledger.in_doubt.insert(name);
            }
        }
    }
}

async fn create(client: &HttpClient, name: &str) -> anyhow::Result<Outcome> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { "written-by": "knit-e2e crash test" },
    });
    let resp =
        match tokio::time::timeout(REQUEST_TIMEOUT, client.post_json(CONFIGMAPS, &body)).await {
            Err(_) => {
                return Ok(Outcome::ConnectionLost(format!(
                    "no answer in {REQUEST_TIMEOUT:?}"
                )));
            }
            Ok(Err(e @ (HttpError::Transport(_) | HttpError::Body(_)))) => {
                return Ok(Outcome::ConnectionLost(e.to_string()));
            }
            Ok(Err(e)) => return Err(e).with_context(|| format!("create {name}")),
            Ok(Ok(resp)) => resp,
        };
    match resp.status {
        StatusCode::CREATED => Ok(Outcome::Created(resp.body)),
        StatusCode::CONFLICT if resp.status_reason() == Some("AlreadyExists") => {
            Ok(Outcome::AlreadyExists)
        }
        status => bail!("create {name}: unexpected {status}: {}", resp.body),
    }
}

fn stored_of(obj: &Value, name: &str, after_restart: bool) -> anyhow::Result<Stored> {
    let meta = &obj["metadata"];
    ensure!(
        meta["name"] == name,
        "create {name} returned an object named {}",
        meta["name"]
    );
    Ok(Stored {
        uid: meta["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .with_context(|| format!("create {name} returned no uid: {obj}"))?
            .to_owned(),
        rv: parse_rv(&meta["resourceVersion"]).with_context(|| format!("create {name}"))?,
        after_restart,
    })
}

fn parse_rv(rv: &Value) -> anyhow::Result<u64> {
    rv.as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("resourceVersion {rv} is not an integer string"))
}

/// One listed object, as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    uid: String,
    rv: u64,
}

/// Lists every ConfigMap in `default` page by page (limit/continue) and
/// returns this test's objects plus the first page's resourceVersion.
async fn list_all(client: &HttpClient) -> anyhow::Result<(Vec<Listed>, u64)> {
    let mut objects = Vec::new();
    let mut list_rv = None;
    let mut cont = String::new();
    for page in 0.. {
        ensure!(
            page < 1000,
            "more than 1000 pages of 100: continue tokens loop"
        );
        let mut path = format!("{CONFIGMAPS}?limit=100");
        if !cont.is_empty() {
            path.push_str("&continue=");
            path.push_str(&query_escape(&cont));
        }
        let resp = client.get_json(&path).await.context("listing configmaps")?;
        ensure!(
            resp.status == StatusCode::OK,
            "list: {}: {}",
            resp.status,
            resp.body
        );
        let list = resp.body;
        ensure!(
            list["kind"] == "ConfigMapList",
            "list kind is {}",
            list["kind"]
        );
        if list_rv.is_none() {
            list_rv = Some(parse_rv(&list["metadata"]["resourceVersion"]).context("list")?);
        }
        let items = list["items"]
            .as_array()
            .with_context(|| format!("list has no items array: {list}"))?;
        ensure!(
            items.len() <= 100,
            "a page of limit=100 has {} items",
            items.len()
        );
        for item in items {
            let meta = &item["metadata"];
            let name = meta["name"]
                .as_str()
                .context("listed item without a name")?;
            if !name.starts_with(PREFIX) {
                continue;
            }
            objects.push(Listed {
                name: name.to_owned(),
                uid: meta["uid"].as_str().unwrap_or_default().to_owned(),
                rv: parse_rv(&meta["resourceVersion"]).with_context(|| format!("listed {name}"))?,
            });
        }
        cont = list["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if cont.is_empty() {
            break;
        }
    }
    Ok((objects, list_rv.unwrap_or(0)))
}

/// Checks the listed objects against the ledger. With `exact`, every name's
/// fate is known and the count must match; without, in-doubt names may or
/// may not be there.
fn verify(objects: &[Listed], ledger: &Ledger, exact: bool) -> anyhow::Result<()> {
    let mut names = HashSet::new();
    let mut uids = HashSet::new();
    let mut rvs = HashSet::new();
    for o in objects {
        ensure!(names.insert(&o.name), "{} is listed twice", o.name);
        ensure!(!o.uid.is_empty(), "{} is listed without a uid", o.name);
        ensure!(uids.insert(&o.uid), "uid {} is listed twice", o.uid);
        ensure!(rvs.insert(o.rv), "resourceVersion {} is listed twice", o.rv);
        let known = ledger.acked.contains_key(&o.name)
            || ledger.maybe_committed.contains(&o.name)
            || (!exact && ledger.in_doubt.contains(&o.name));
        ensure!(known, "{} is listed but was never created", o.name);
    }
    let by_name: BTreeMap<_, _> = objects.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut lost = Vec::new();
    for (name, stored) in &ledger.acked {
        match by_name.get(name.as_str()) {
            None => lost.push(name.as_str()),
            Some(o) => ensure!(
                o.uid == stored.uid && o.rv == stored.rv,
                "{name} was acknowledged with uid {} rv {} but is listed with uid {} rv {}",
                stored.uid,
                stored.rv,
                o.uid,
                o.rv
            ),
        }
    }
    ensure!(
        lost.is_empty(),
        "{} acknowledged creates are lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for name in &ledger.maybe_committed {
        ensure!(
            by_name.contains_key(name.as_str()),
            "{name} answered 409 AlreadyExists but is not listed"
        );
    }
    if exact {
        let expected = ledger.acked.len() + ledger.maybe_committed.len();
        ensure!(
            objects.len() == expected,
            "{} objects listed, expected {} acked + {} committed-unacked",
            objects.len(),
            ledger.acked.len(),
            ledger.maybe_committed.len()
        );
    }
    Ok(())
}

/// Percent-encodes a query parameter value (continue tokens are opaque).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The checker itself must catch what it is there to catch.
#[test]
fn verify_catches_lost_changed_duplicate_and_unknown_objects() {
    let stored = |uid: &str, rv| Stored {
        uid: uid.to_owned(),
        rv,
        after_restart: false,
    };
    let listed = |name: &str, uid: &str, rv| Listed {
        name: name.to_owned(),
        uid: uid.to_owned(),
        rv,
    };
    let mut ledger = Ledger::default();
    ledger.acked.insert("crash-1".into(), stored("u1", 10));
    ledger.acked.insert("crash-2".into(), stored("u2", 11));
    ledger.in_doubt.insert("crash-3".into());
    let good = vec![listed("crash-1", "u1", 10), listed("crash-2", "u2", 11)];
    verify(&good, &ledger, true).expect("a faithful listing passes");

    let with_in_doubt = [good.clone(), vec![listed("crash-3", "u3", 12)]].concat();
    verify(&with_in_doubt, &ledger, false).expect("in-doubt objects may be there");
    let err = verify(&with_in_doubt, &ledger, true).unwrap_err();
    assert!(err.to_string().contains("never created"), "{err}");

    let cases = [
        (vec![listed("crash-1", "u1", 10)], "lost"),
        (
            vec![listed("crash-1", "u1", 10), listed("crash-2", "u9", 11)],
            "acknowledged with",
        ),
        (
            vec![listed("crash-1", "u1", 10), listed("crash-2", "u2", 10)],
            "listed twice",
        ),
        (
            vec![listed("crash-1", "u1", 10), listed("crash-1", "u1", 10)],
            "listed twice",
        ),
        (
            [good.clone(), vec![listed("other-7", "u7", 13)]].concat(),
            "never created",
        ),
    ];
    for (objects, expected) in cases {
        let err = verify(&objects, &ledger, false).unwrap_err().to_string();
        assert!(err.contains(expected), "{objects:?}: {err}");
    }

    ledger.maybe_committed.insert("crash-4".into());
    let err = verify(&good, &ledger, true).unwrap_err().to_string();
    assert!(err.contains("409 AlreadyExists but is not listed"), "{err}");
}

#[test]
fn query_escape_keeps_unreserved_and_escapes_the_rest() {
    assert_eq!(query_escape("aZ9-._~"), "aZ9-._~");
    assert_eq!(query_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
}
