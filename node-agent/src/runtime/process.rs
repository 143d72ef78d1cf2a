//! Processes in a pod's namespaces, without `unsafe` and without forking
//! from the async runtime: a short-lived dedicated thread enters the pod's
//! network namespace, unshares a UTS and a mount namespace of its own,
//! sets the hostname, bind-mounts the pod's `/etc/hosts` and
//! `/etc/resolv.conf`, and only then spawns the process with
//! `std::process::Command`. Namespaces belong to the calling thread, so
//! the child inherits exactly that thread's view and the rest of the
//! agent is untouched; the thread ends right after the spawn.
//!
//! Each container runs under a tiny `/bin/sh` supervisor in its own
//! process group: the shell runs the command in the foreground, ignores
//! (traps) SIGTERM/SIGINT/SIGHUP itself so that the command alone decides
//! how to die, and writes the command's exit status (`128+n` for signal
//! `n`, as kubelet reports it) to an exit file. That file is how a
//! restarted agent learns the exit code of a process that is no longer
//! its child; a supervisor that was SIGKILLed writes nothing, and the
//! runtime then reports 137.
//!
//! Processes are identified across agent restarts by pid plus the start
//! time the kernel records in `/proc/<pid>/stat`, so a recycled pid is
//! never mistaken for a container.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The supervisor script: `$1` is the exit file, the rest the command.
const SUPERVISOR: &str = "f=$1; shift; trap : TERM INT HUP; \"$@\"; echo $? >\"$f\"";

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command and its arguments, already expanded.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The hostname of a UTS namespace of its own; `None` keeps the
    /// node's (`hostNetwork` pods).
    pub hostname: Option<String>,
    /// The pod's network namespace, `None` for the node's own.
    pub netns: Option<PathBuf>,
    /// Bind-mounted over `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Bind-mounted over `/etc/hosts`.
    pub hosts: PathBuf,
    /// Where stdout goes (appended).
    pub stdout: PathBuf,
    /// Where stderr goes (appended).
    pub stderr: PathBuf,
    /// Where the supervisor writes the exit status.
    pub exit_file: PathBuf,
}

/// Starts a container process; returns the child and its start time.
pub fn launch(launch: Launch) -> io::Result<(Child, u64)> {
    let child = std::thread::Builder::new()
        .name("knit-launch".into())
        .spawn(move || spawn_in_namespaces(&launch))?
        .join()
        .map_err(|_| io::Error::other("the launch thread panicked"))??;
    let started = start_time(child.id() as i32)
        .ok_or_else(|| io::Error::other("the process vanished right after its start"))?;
    Ok((child, started))
}

fn spawn_in_namespaces(launch: &Launch) -> io::Result<Child> {
    // Open everything that lives in the node's mount namespace first.
    let netns = launch.netns.as_ref().map(File::open).transpose()?;
    let append = |path: &Path| OpenOptions::new().create(true).append(true).open(path);
    let (stdout, stderr) = (append(&launch.stdout)?, append(&launch.stderr)?);
    if let Some(netns) = &netns {
        nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).map_err(sys("setns net"))?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS;
    if launch.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    nix::sched::unshare(flags).map_err(sys("unshare"))?;
    if let Some(hostname) = &launch.hostname {
        nix::unistd::sethostname(hostname).map_err(sys("sethostname"))?;
    }
    // A slave copy: the node's unmounts (a removed sandbox's /run/netns
    // file) still reach us, our bind mounts never reach the node.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make / rslave"))?;
    for (source, target) in [
        (&launch.resolv_conf, "/etc/resolv.conf"),
        (&launch.hosts, "/etc/hosts"),
    ] {
        nix::mount::mount(
            Some(source.as_path()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind mount /etc file"))?;
    }
    Command::new("/bin/sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("knit")
        .arg(&launch.exit_file)
        .args(&launch.argv)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
}

fn sys(what: &'static str) -> impl Fn(nix::Error) -> io::Error {
    move |err| io::Error::other(format!("{what}: {err}"))
}

/// The start time (clock ticks after boot) of a live, non-zombie process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Then: state (3), ..., starttime (22).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process `pid` started at `started` is still alive.
pub fn alive(pid: i32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Sends `signal` to the process group `pgid`; a gone group is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), signal);
}

/// The exit status the supervisor recorded, if it got to write one.
pub fn read_exit_file(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// An exit status as kubelet reports it: the code, or `128+n` when
/// killed by signal `n`.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(137)
}

/// What an exec probe's command did.
#[derive(Debug)]
pub struct ExecOutput {
    /// Its exit code; `None` if it timed out (and was killed).
    pub code: Option<i32>,
    /// Its stdout and stderr together, cut to 10 KiB as kubelet cuts it.
    pub output: String,
}

/// Runs `argv` inside the namespaces (mount, UTS, network) of the live
/// process `pid`, with `env` and `cwd`, for at most `timeout`. Blocks:
/// call it from a thread of its own.
pub fn exec_in(
    pid: i32,
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    timeout: Duration,
) -> io::Result<ExecOutput> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("the exec probe has no command"))?;
    let (program, args) = (program.clone(), args.to_vec());
    let (env, cwd) = (env.to_vec(), cwd.to_path_buf());
    let handles: Vec<(File, CloneFlags)> = [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ]
    .into_iter()
    .map(|(ns, flag)| Ok((File::open(format!("/proc/{pid}/ns/{ns}"))?, flag)))
    .collect::<io::Result<_>>()?;
    std::thread::Builder::new()
        .name("knit-exec".into())
        .spawn(move || -> io::Result<ExecOutput> {
            // Joining a mount namespace needs a filesystem context of our
            // own, not the one the agent's threads share.
            nix::sched::unshare(CloneFlags::CLONE_FS).map_err(sys("unshare fs"))?;
            for (file, flag) in &handles {
                nix::sched::setns(file, *flag).map_err(sys("setns"))?;
            }
            let (mut reader, writer) = io::pipe()?;
            let mut child = Command::new(&program)
                .args(&args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(&cwd)
                .stdin(Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .process_group(0)
                .spawn()?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = (&mut reader).take(10 * 1024).read_to_end(&mut buf);
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                // Drain the rest so the command never blocks on a full pipe.
                let _ = io::copy(&mut reader, &mut io::sink());
            });
            let deadline = Instant::now() + timeout;
            let code = loop {
                if let Some(status) = child.try_wait()? {
                    break Some(exit_code(status));
                }
                if Instant::now() >= deadline {
                    signal_group(child.id() as i32, Signal::SIGKILL);
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            // Grandchildren may hold the pipe open: wait for them only briefly.
            let output = rx
                .recv_timeout(Duration::from_millis(100))
                .unwrap_or_default();
            Ok(ExecOutput { code, output })
        })?
        .join()
        .map_err(|_| io::Error::other("the exec thread panicked"))?
}
