//! Container logs in kubelet's CRI format.
//!
//! A container writes its stdout and stderr straight into two raw files
//! (`<n>.stdout`, `<n>.stderr` for its `n`-th run): no pipe through the
//! agent, so a container keeps running and logging while the agent is
//! down or restarting. The runtime copies what is new in them, a line at
//! a time, into `<n>.log` in the format kubelet's CRI runtimes write and
//! `kubectl logs` reads through the kubelet:
//!
//! ```text
//! 2026-11-26T13:52:25.123456789Z stdout F Hello from web-1
//! 2026-11-26T13:52:25.223456789Z stderr F Traceback (most recent call last):
//! ```
//!
//! one line per log line: an RFC 3339 UTC timestamp with nanoseconds (when
//! the runtime saw the line, at most a tick after it was written, or
//! later if the agent was down), the stream, the tag `F` for a full line
//! or `P` for a part of a line longer than 16 KiB (the next record
//! continues it), a space, and the text without its newline. A reader
//! honours `timestamps` by keeping or cutting the first field,
//! `sinceSeconds` by comparing it, `tailLines` by counting records. How far
//! each raw file has been copied is kept in `<n>.pos` so that a restarted
//! agent neither loses nor repeats lines (short of a crash between the two
//! writes).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The longest record; longer lines are split into `P` records.
const MAX_LINE: usize = 16 * 1024;
/// The most one pump reads from a raw file, so one chatty container cannot
/// hold the runtime's tick.
const MAX_READ: u64 = 1 << 20;

/// The files of one run of a container.
#[derive(Debug, Clone)]
pub struct RunLogs {
    /// Raw stdout.
    pub stdout: PathBuf,
    /// Raw stderr.
    pub stderr: PathBuf,
    /// The CRI-format log.
    pub log: PathBuf,
    /// How far the raw files have been copied.
    pub pos: PathBuf,
}

impl RunLogs {
    /// The files of run `n` in `dir`.
    pub fn new(dir: &Path, n: i32) -> Self {
        RunLogs {
            stdout: dir.join(format!("{n}.stdout")),
            stderr: dir.join(format!("{n}.stderr")),
            log: dir.join(format!("{n}.log")),
            pos: dir.join(format!("{n}.pos")),
        }
    }

    /// Removes the run's files.
    pub fn remove(&self) {
        for path in [&self.stdout, &self.stderr, &self.log, &self.pos] {
            let _ = fs::remove_file(path);
        }
    }

    /// Copies what is new in the raw files into the log. `last`: the
    /// process has exited, so a final line without a newline is complete.
    /// Returns whether anything was written.
    pub fn pump(&self, last: bool) -> io::Result<bool> {
        let mut offsets = self.offsets();
        let mut out = Vec::new();
        for (stream, raw, offset) in [
            ("stdout", &self.stdout, &mut offsets.0),
            ("stderr", &self.stderr, &mut offsets.1),
        ] {
            let chunk = read_from(raw, *offset)?;
            let used = records(stream, &chunk, last, &mut out);
            *offset += used as u64;
        }
        if out.is_empty() {
            return Ok(false);
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?
            .write_all(&out)?;
        fs::write(&self.pos, format!("{} {}\n", offsets.0, offsets.1))?;
        Ok(true)
    }

    fn offsets(&self) -> (u64, u64) {
        let text = fs::read_to_string(&self.pos).unwrap_or_default();
        let mut parts = text.split_whitespace().map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(MAX_READ).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Appends the CRI records for the complete lines of `chunk` to `out`;
/// returns how many bytes of `chunk` they used.
fn records(stream: &str, chunk: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let now = k8s_openapi::jiff::Timestamp::now();
    let stamp = format!("{now:.9}");
    let mut used = 0;
    let mut rest = chunk;
    loop {
        let (line, consumed, tag) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) if end <= MAX_LINE => (&rest[..end], end + 1, 'F'),
            _ if rest.len() > MAX_LINE => (&rest[..MAX_LINE], MAX_LINE, 'P'),
            None if last && !rest.is_empty() => (rest, rest.len(), 'F'),
            _ => break,
        };
        out.extend_from_slice(format!("{stamp} {stream} {tag} ").as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
        used += consumed;
        rest = &rest[consumed..];
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(log: &str) -> Vec<(String, String, String)> {
        log.lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(ts.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{ts}");
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn pumps_complete_lines_then_the_rest_at_the_end() {
        let dir = std::env::temp_dir().join(format!("knit-logs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let logs = RunLogs::new(&dir, 0);
        logs.remove();
        fs::write(&logs.stdout, "one\ntwo\npart").unwrap();
        fs::write(&logs.stderr, "oops\n").unwrap();
        assert!(logs.pump(false).unwrap());
        assert!(!logs.pump(false).unwrap(), "nothing new, nothing written");
        let mut raw = OpenOptions::new().append(true).open(&logs.stdout).unwrap();
        raw.write_all(b"ial\n\nlast").unwrap();
        assert!(logs.pump(true).unwrap());
        let got = parse(&fs::read_to_string(&logs.log).unwrap());
        let want = [
            ("stdout", "F", "one"),
            ("stdout", "F", "two"),
            ("stderr", "F", "oops"),
            ("stdout", "F", "partial"),
            ("stdout", "F", ""),
            ("stdout", "F", "last"),
        ];
        let got: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(got, want);
        logs.remove();
        let _ = fs::remove_dir(&dir);
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let mut out = Vec::new();
        let line = format!("{}\n", "x".repeat(MAX_LINE + 5));
        let used = records("stdout", line.as_bytes(), false, &mut out);
        assert_eq!(used, line.len());
        let text = String::from_utf8(out).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "F"]);
    }
}
