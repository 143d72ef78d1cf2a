//! One check of a probe against a running container. Network checks
//! connect from the calling thread after it has entered the pod's network
//! namespace, so they reach the pod at its own address (or `localhost`)
//! whether or not the node can route to it; exec checks run inside the
//! container's namespaces. Failure messages read like kubelet's, since
//! they become `Unhealthy` events.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Action, PortRef};
use crate::runtime::process;

/// The container a check runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace; `None` for the node's own.
    pub netns: Option<PathBuf>,
    /// The pod's IP, the default host.
    pub pod_ip: IpAddr,
    /// The container's supervisor process (for exec checks).
    pub pid: i32,
    /// The container's environment (for exec checks).
    pub env: Vec<(String, String)>,
    /// The container's working directory (for exec checks).
    pub cwd: PathBuf,
    /// The container's named ports.
    pub ports: Vec<(String, u16)>,
}

/// Runs one check; `Err` carries the failure as kubelet words it. Blocks
/// for at most about `timeout`, and enters the pod's network namespace
/// for network checks: call it on a thread of its own, never on a worker
/// of the async runtime.
pub fn run(action: &Action, target: &Target, timeout: Duration) -> Result<(), String> {
    match action {
        Action::Http {
            host,
            port,
            path,
            scheme,
            headers,
        } => {
            if !scheme.eq_ignore_ascii_case("HTTP") {
                return Err(format!("{scheme} probes are not supported by knit"));
            }
            let addr = address(host, port, target)?;
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            let url = format!("http://{addr}{path}");
            enter(target)?;
            http_get(addr, &path, headers, timeout).map_err(|err| match err {
                HttpError::Status(code) => format!("HTTP probe failed with statuscode: {code}"),
                HttpError::Dial(msg) => format!("Get \"{url}\": dial tcp {addr}: {msg}"),
                HttpError::Other(msg) => format!("Get \"{url}\": {msg}"),
            })
        }
        Action::Tcp { host, port } => {
            let addr = address(host, port, target)?;
            enter(target)?;
            TcpStream::connect_timeout(&addr, timeout)
                .map(drop)
                .map_err(|err| format!("dial tcp {addr}: {}", dial_error(&err)))
        }
        Action::Exec { command } => {
            let out = process::exec_in(target.pid, command, &target.env, &target.cwd, timeout)
                .map_err(|err| format!("exec {command:?}: {err}"))?;
            match out.code {
                Some(0) => Ok(()),
                Some(code) if out.output.trim().is_empty() => {
                    Err(format!("command {command:?} exited with {code}"))
                }
                Some(_) => Err(out.output.trim_end().to_string()),
                None => Err(format!(
                    "command {command:?} timed out after {}s",
                    timeout.as_secs()
                )),
            }
        }
        Action::Unsupported(msg) => Err(msg.clone()),
    }
}

fn enter(target: &Target) -> Result<(), String> {
    match &target.netns {
        Some(path) => crate::netns::enter(path).map_err(|err| err.to_string()),
        None => Ok(()),
    }
}

fn address(host: &Option<String>, port: &PortRef, target: &Target) -> Result<SocketAddr, String> {
    let port = match port {
        PortRef::Number(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}"))?,
        PortRef::Name(name) => target
            .ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("the container has no port named {name:?}"))?,
    };
    match host {
        None => Ok(SocketAddr::new(target.pod_ip, port)),
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SocketAddr::new(ip, port)),
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| format!("dial tcp: lookup {host}: no such host")),
        },
    }
}

fn dial_error(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".into(),
        _ => format!("connect: {err}"),
    }
}

enum HttpError {
    Status(u16),
    Dial(String),
    Other(String),
}

/// A `GET` over HTTP/1.1 that reads only the status line: a probe cares
/// about nothing else.
fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), HttpError> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| HttpError::Dial(dial_error(&e)))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let timed_out = || {
        HttpError::Other(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
        )
    };
    stream
        .set_read_timeout(Some(left))
        .map_err(|_| timed_out())?;
    stream
        .set_write_timeout(Some(left))
        .map_err(|_| timed_out())?;
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.35\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| HttpError::Other(e.to_string()))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(HttpError::Other(e.to_string())),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HttpError::Other("malformed HTTP response".into()))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(HttpError::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn target() -> Target {
        Target {
            netns: None,
            pod_ip: "127.0.0.1".parse().unwrap(),
            pid: 0,
            env: vec![],
            cwd: "/".into(),
            ports: vec![("web".into(), 1)],
        }
    }

    fn serve_once(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        port
    }

    fn http(port: u16) -> Action {
        Action::Http {
            host: None,
            port: PortRef::Number(port as i32),
            path: "healthz".into(),
            scheme: "HTTP".into(),
            headers: vec![("X-Probe".into(), "1".into())],
        }
    }

    #[test]
    fn http_status_decides() {
        let ok = serve_once("204 No Content");
        assert_eq!(run(&http(ok), &target(), Duration::from_secs(2)), Ok(()));
        let bad = serve_once("503 Service Unavailable");
        assert_eq!(
            run(&http(bad), &target(), Duration::from_secs(2)),
            Err("HTTP probe failed with statuscode: 503".into())
        );
    }

    #[test]
    fn refused_connections_fail_like_kubelet_says() {
        // Bind then drop: the port is very likely closed now.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = run(&http(port), &target(), Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("connect: connection refused"), "{err}");
        let tcp = Action::Tcp {
            host: None,
            port: PortRef::Name("web".into()),
        };
        let mut t = target();
        t.ports = vec![("web".into(), port)];
        let err = run(&tcp, &t, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        t.ports = vec![("web".into(), open.local_addr().unwrap().port())];
        assert_eq!(run(&tcp, &t, Duration::from_secs(1)), Ok(()));
        let unnamed = Action::Tcp {
            host: None,
            port: PortRef::Name("nope".into()),
        };
        assert!(run(&unnamed, &t, Duration::from_secs(1)).is_err());
    }
}
