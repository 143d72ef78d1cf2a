//! Pod IPs out of the node's pod CIDR: the pure choice (the first free
//! address from `.2` upwards; `.1` is the bridge) and the record of which
//! pod holds which address, kept as one small file per pod in the agent's
//! state dir so a restarted agent gives every pod the address it had.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// The first address of `cidr` from `.2` upwards that is not in `used`
/// (never the network, bridge or broadcast address); `None` when the CIDR
/// is full.
pub fn choose_ip(cidr: Ipv4Net, used: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let first = u32::from(cidr.network()).checked_add(2)?;
    let last = u32::from(cidr.broadcast()).checked_sub(1)?;
    (first..=last).map(Ipv4Addr::from).find(|ip| !used(*ip))
}

/// Which pod (by uid) holds which address, mirrored in `<dir>/<uid>`.
#[derive(Debug)]
pub struct IpBook {
    dir: PathBuf,
    by_uid: BTreeMap<String, Ipv4Addr>,
}

impl IpBook {
    /// The book kept in `dir`, loaded from the files there (files that do
    /// not hold an address, or that repeat one already taken, are dropped).
    pub fn load(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut book = IpBook {
            dir: dir.to_path_buf(),
            by_uid: BTreeMap::new(),
        };
        let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Ok(uid) = entry.file_name().into_string() else {
                continue;
            };
            let parsed = fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
            match parsed {
                Some(ip) if !book.by_uid.values().any(|v| *v == ip) => {
                    book.by_uid.insert(uid, ip);
                }
                _ => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(book)
    }

    /// The address pod `uid` holds.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    /// Every uid with an address.
    pub fn uids(&self) -> Vec<String> {
        self.by_uid.keys().cloned().collect()
    }

    /// Whether `ip` is held by some pod.
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.by_uid.values().any(|v| *v == ip)
    }

    /// Records that `uid` holds `ip` (an address recovered from a sandbox),
    /// unless another pod holds it; `false` then.
    pub fn claim(&mut self, uid: &str, ip: Ipv4Addr) -> io::Result<bool> {
        if self.by_uid.iter().any(|(u, v)| *v == ip && u != uid) {
            return Ok(false);
        }
        self.write(uid, ip)?;
        Ok(true)
    }

    /// The address of pod `uid` inside `cidr`: the one it holds, else the
    /// first free one, recorded before it is returned. `None` when the
    /// CIDR is full.
    pub fn assign(&mut self, uid: &str, cidr: Ipv4Net) -> io::Result<Option<Ipv4Addr>> {
        if let Some(ip) = self.get(uid) {
            if cidr.contains(&ip) && ip != cidr.network() && ip != cidr.broadcast() {
                return Ok(Some(ip));
            }
            // A CIDR that changed under us (a node re-created with another
            // slice): the old address is no use.
            self.release(uid)?;
        }
        let Some(ip) = choose_ip(cidr, |ip| self.holds(ip)) else {
            return Ok(None);
        };
        self.write(uid, ip)?;
        Ok(Some(ip))
    }

    /// Forgets pod `uid`'s address.
    pub fn release(&mut self, uid: &str) -> io::Result<()> {
        self.by_uid.remove(uid);
        match fs::remove_file(self.dir.join(uid)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    fn write(&mut self, uid: &str, ip: Ipv4Addr) -> io::Result<()> {
        // Written whole then renamed, so a crash never leaves half a file.
        let tmp = self.dir.join(format!(".{uid}.tmp"));
        fs::write(&tmp, format!("{ip}\n"))?;
        fs::rename(&tmp, self.dir.join(uid))?;
        self.by_uid.insert(uid.to_string(), ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr() -> Ipv4Net {
        "10.0.1.0/24".parse().unwrap()
    }

    #[test]
    fn the_first_free_address_from_dot_two() {
        assert_eq!(
            choose_ip(cidr(), |_| false),
            Some("10.0.1.2".parse().unwrap())
        );
        let two: Ipv4Addr = "10.0.1.2".parse().unwrap();
        let three: Ipv4Addr = "10.0.1.3".parse().unwrap();
        assert_eq!(choose_ip(cidr(), |ip| ip == two), Some(three));
        // A hole left by a deleted pod is reused first.
        assert_eq!(choose_ip(cidr(), |ip| ip == three), Some(two));
        // Never the broadcast address; a full CIDR gives nothing.
        let small: Ipv4Net = "10.0.1.0/30".parse().unwrap();
        assert_eq!(choose_ip(small, |_| false), Some(two));
        assert_eq!(choose_ip(small, |ip| ip == two), None);
    }

    #[test]
    fn the_book_survives_a_restart_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = IpBook::load(dir.path()).unwrap();
        let a = book.assign("uid-a", cidr()).unwrap().unwrap();
        let b = book.assign("uid-b", cidr()).unwrap().unwrap();
        assert_eq!(a.to_string(), "10.0.1.2");
        assert_eq!(b.to_string(), "10.0.1.3");
        assert_eq!(book.assign("uid-a", cidr()).unwrap(), Some(a), "stable");

        let mut again = IpBook::load(dir.path()).unwrap();
        assert_eq!(again.get("uid-a"), Some(a));
        assert_eq!(again.get("uid-b"), Some(b));
        again.release("uid-a").unwrap();
        assert!(!again.holds(a));
        let c = again.assign("uid-c", cidr()).unwrap().unwrap();
        assert_eq!(c, a, "the released address is the first free one");
        assert!(!again.claim("uid-d", b).unwrap(), "b is taken");
        assert!(again.claim("uid-b", b).unwrap());

        let last = IpBook::load(dir.path()).unwrap();
        assert_eq!(last.uids(), ["uid-b", "uid-c"]);
    }

    #[test]
    fn an_address_outside_a_new_cidr_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = IpBook::load(dir.path()).unwrap();
        book.assign("uid-a", cidr()).unwrap();
        let other: Ipv4Net = "10.0.7.0/24".parse().unwrap();
        assert_eq!(
            book.assign("uid-a", other).unwrap(),
            Some("10.0.7.2".parse().unwrap())
        );
        std::fs::write(dir.path().join("junk"), "not an ip").unwrap();
        let book = IpBook::load(dir.path()).unwrap();
        assert_eq!(book.uids(), ["uid-a"]);
    }
}
