//! An in-memory kernel for tests: namespaces with links, addresses, routes
//! and sysctls, behaving like Linux where the appliers depend on it (a veth
//! pair dies as a whole, an address brings its subnet route, deleting a
//! namespace deletes its links), and recording every change as one line
//! such as `node: add bridge cbr0`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use super::{Link, LinkChange, Netlink, PROTO_KERNEL, Route, check_sysctl_key};
use crate::netns::{Netns, check_name};
use crate::{Error, Result};

/// The shared state of a fake host: every namespace and the change log.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<String, Namespace>,
    next_index: u32,
    log: Vec<String>,
}

#[derive(Debug, Default)]
struct Namespace {
    links: Vec<FakeLink>,
    routes: Vec<Route>,
    sysctls: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct FakeLink {
    link: Link,
    addresses: Vec<IpNet>,
    /// For a veth: the namespace of its peer.
    peer_ns: Option<String>,
}

impl Namespace {
    fn fresh() -> Self {
        let mut ns = Namespace::default();
        ns.sysctls.insert("net/ipv4/ip_forward".into(), "0".into());
        ns
    }

    fn find(&self, name: &str) -> Result<&FakeLink> {
        self.links
            .iter()
            .find(|l| l.link.name == name)
            .ok_or_else(|| Error::NoLink(name.to_string()))
    }

    fn find_mut(&mut self, name: &str) -> Result<&mut FakeLink> {
        self.links
            .iter_mut()
            .find(|l| l.link.name == name)
            .ok_or_else(|| Error::NoLink(name.to_string()))
    }

    fn refuse_existing(&self, name: &str) -> Result<()> {
        if self.links.iter().any(|l| l.link.name == name) {
            return Err(Error::Conflict(format!("link {name} exists (EEXIST)")));
        }
        Ok(())
    }

    /// Removes a link with its addresses and routes, as the kernel does.
    fn remove_link(&mut self, index: u32) -> Option<FakeLink> {
        let pos = self.links.iter().position(|l| l.link.index == index)?;
        let gone = self.links.remove(pos);
        self.routes
            .retain(|r| r.dev.as_deref() != Some(gone.link.name.as_str()));
        for link in &mut self.links {
            if link.link.master == Some(index) {
                link.link.master = None;
                link.link.hairpin = None;
            }
        }
        Some(gone)
    }
}

impl FakeKernel {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a namespace that exists outside the [`Netns`] directory, such
    /// as the node's own, with a `lo` like every namespace has.
    pub fn add_namespace(&self, name: &str) {
        let mut state = self.lock();
        Self::make_namespace(&mut state, name);
    }

    /// Adds a plain link (`kind` `None` for a device like `lo`), down,
    /// outside the change log: the starting state of a test.
    pub fn add_plain_link(&self, ns: &str, name: &str, kind: Option<&str>, mtu: u32) {
        let mut state = self.lock();
        Self::make_namespace(&mut state, ns);
        state.next_index += 1;
        let index = state.next_index;
        let ns = state.namespaces.get_mut(ns).expect("made above");
        ns.links.push(FakeLink {
            link: Link {
                index,
                name: name.to_string(),
                kind: kind.map(str::to_string),
                mtu,
                mac: Some(fake_mac(index)),
                up: false,
                master: None,
                peer_index: None,
                hairpin: None,
            },
            addresses: Vec::new(),
            peer_ns: None,
        });
    }

    /// Sets a sysctl outside the change log (e.g. to make
    /// `net/bridge/bridge-nf-call-iptables` exist).
    pub fn preset_sysctl(&self, ns: &str, key: &str, value: &str) {
        let mut state = self.lock();
        Self::make_namespace(&mut state, ns);
        let ns = state.namespaces.get_mut(ns).expect("made above");
        ns.sysctls.insert(key.to_string(), value.to_string());
    }

    /// A handle in the named namespace (which need not exist yet: calls
    /// then fail with [`Error::NoNamespace`], as a real handle could not be
    /// opened).
    pub fn netlink(&self, ns: &str) -> FakeNetlink {
        FakeNetlink {
            kernel: self.clone(),
            ns: ns.to_string(),
        }
    }

    /// The [`Netns`] view of this host.
    pub fn netns(&self) -> FakeNetns {
        FakeNetns {
            kernel: self.clone(),
        }
    }

    /// Every change since the last call, in order, and clears the log.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().log)
    }

    /// The names of all namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock().namespaces.keys().cloned().collect()
    }

    /// A plain-text dump of one namespace (links with their state and
    /// addresses, routes, sysctls), for snapshot tests.
    pub fn dump(&self, ns: &str) -> String {
        use std::fmt::Write;
        let state = self.lock();
        let Some(ns) = state.namespaces.get(ns) else {
            return "(no namespace)\n".into();
        };
        let name_of = |index: u32| {
            ns.links
                .iter()
                .find(|l| l.link.index == index)
                .map(|l| l.link.name.clone())
                .unwrap_or_else(|| format!("#{index}"))
        };
        let mut out = String::new();
        for l in &ns.links {
            let link = &l.link;
            let _ = write!(
                out,
                "link {} kind={} mtu={} {}",
                link.name,
                link.kind.as_deref().unwrap_or("-"),
                link.mtu,
                if link.up { "up" } else { "down" }
            );
            if let Some(m) = link.master {
                let _ = write!(out, " master={}", name_of(m));
            }
            if let Some(h) = link.hairpin {
                let _ = write!(out, " hairpin={}", if h { "on" } else { "off" });
            }
            if let Some(peer_ns) = &l.peer_ns {
                let _ = write!(out, " peer-netns={peer_ns}");
            }
            for a in &l.addresses {
                let _ = write!(out, " {a}");
            }
            out.push('\n');
        }
        let mut routes = ns.routes.clone();
        routes.sort();
        for r in routes {
            let _ = writeln!(out, "route {r}");
        }
        for (k, v) in &ns.sysctls {
            let _ = writeln!(out, "sysctl {k}={v}");
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already;
        // the state is still worth reading for its report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn make_namespace(state: &mut State, name: &str) -> bool {
        if state.namespaces.contains_key(name) {
            return false;
        }
        state.next_index += 1;
        let index = state.next_index;
        let mut ns = Namespace::fresh();
        ns.links.push(FakeLink {
            link: Link {
                index,
                name: "lo".into(),
                kind: None,
                mtu: 65536,
                mac: None,
                up: false,
                master: None,
                peer_index: None,
                hairpin: None,
            },
            addresses: Vec::new(),
            peer_ns: None,
        });
        state.namespaces.insert(name.to_string(), ns);
        true
    }

    /// Deletes a link and, for a veth, its peer.
    fn delete_link_in(state: &mut State, ns: &str, name: &str) -> Result<()> {
        let space = state
            .namespaces
            .get_mut(ns)
            .ok_or_else(|| Error::NoNamespace(ns.to_string()))?;
        let index = space.find(name)?.link.index;
        let gone = space.remove_link(index).expect("found above");
        if let (Some(peer_ns), Some(peer)) = (gone.peer_ns, gone.link.peer_index)
            && let Some(other) = state.namespaces.get_mut(&peer_ns)
        {
            other.remove_link(peer);
        }
        Ok(())
    }
}

/// A [`Netlink`] handle on one namespace of a [`FakeKernel`].
#[derive(Clone, Debug)]
pub struct FakeNetlink {
    kernel: FakeKernel,
    ns: String,
}

impl FakeNetlink {
    fn with<T>(&self, f: impl FnOnce(&mut Namespace) -> Result<T>) -> Result<T> {
        let mut state = self.kernel.lock();
        let ns = state
            .namespaces
            .get_mut(&self.ns)
            .ok_or_else(|| Error::NoNamespace(self.ns.clone()))?;
        f(ns)
    }

    /// Applies a change and, when it succeeds, records it.
    fn change<T>(&self, what: String, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut state = self.kernel.lock();
        if !state.namespaces.contains_key(&self.ns) {
            return Err(Error::NoNamespace(self.ns.clone()));
        }
        let out = f(&mut state)?;
        state.log.push(format!("{}: {what}", self.ns));
        Ok(out)
    }

    fn ns<'a>(&self, state: &'a mut State) -> &'a mut Namespace {
        state
            .namespaces
            .get_mut(&self.ns)
            .expect("checked by change()")
    }
}

impl Netlink for FakeNetlink {
    fn links(&self) -> Result<Vec<Link>> {
        self.with(|ns| Ok(ns.links.iter().map(|l| l.link.clone()).collect()))
    }

    fn link(&self, name: &str) -> Result<Option<Link>> {
        self.with(|ns| Ok(ns.find(name).ok().map(|l| l.link.clone())))
    }

    fn add_bridge(&self, name: &str) -> Result<()> {
        self.change(format!("add bridge {name}"), |state| {
            state.next_index += 1;
            let index = state.next_index;
            let ns = self.ns(state);
            ns.refuse_existing(name)?;
            ns.links.push(FakeLink {
                link: Link {
                    index,
                    name: name.to_string(),
                    kind: Some("bridge".into()),
                    mtu: 1500,
                    mac: Some(fake_mac(index)),
                    up: false,
                    master: None,
                    peer_index: None,
                    hairpin: None,
                },
                addresses: Vec::new(),
                peer_ns: None,
            });
            Ok(())
        })
    }

    fn add_dummy(&self, name: &str) -> Result<()> {
        self.change(format!("add dummy {name}"), |state| {
            state.next_index += 1;
            let index = state.next_index;
            let ns = self.ns(state);
            ns.refuse_existing(name)?;
            ns.links.push(FakeLink {
                link: Link {
                    index,
                    name: name.to_string(),
                    kind: Some("dummy".into()),
                    mtu: 1500,
                    mac: Some(fake_mac(index)),
                    up: false,
                    master: None,
                    peer_index: None,
                    hairpin: None,
                },
                addresses: Vec::new(),
                peer_ns: None,
            });
            Ok(())
        })
    }

    fn add_veth(&self, name: &str, mtu: u32, peer: &str, peer_netns: &str) -> Result<()> {
        let what = format!("add veth {name} mtu {mtu} peer {peer} in {peer_netns}");
        self.change(what, |state| {
            let Some(other) = state.namespaces.get(peer_netns) else {
                return Err(Error::NoNamespace(peer_netns.to_string()));
            };
            other.refuse_existing(peer)?;
            self.ns(state).refuse_existing(name)?;
            let here = state.next_index + 1;
            let there = state.next_index + 2;
            state.next_index += 2;
            let veth = |index, name: &str, peer_index| Link {
                index,
                name: name.to_string(),
                kind: Some("veth".into()),
                mtu,
                mac: Some(fake_mac(index)),
                up: false,
                master: None,
                peer_index: Some(peer_index),
                hairpin: None,
            };
            let host_ns = self.ns.clone();
            self.ns(state).links.push(FakeLink {
                link: veth(here, name, there),
                addresses: Vec::new(),
                peer_ns: Some(peer_netns.to_string()),
            });
            let other = state.namespaces.get_mut(peer_netns).expect("checked above");
            other.links.push(FakeLink {
                link: veth(there, peer, here),
                addresses: Vec::new(),
                peer_ns: Some(host_ns),
            });
            Ok(())
        })
    }

    fn delete_link(&self, name: &str) -> Result<()> {
        self.change(format!("delete link {name}"), |state| {
            FakeKernel::delete_link_in(state, &self.ns, name)
        })
    }

    fn set_link(&self, name: &str, change: &LinkChange) -> Result<()> {
        let mut what = format!("set link {name}");
        if let Some(mtu) = change.mtu {
            what.push_str(&format!(" mtu {mtu}"));
        }
        if let Some(mac) = change.mac {
            what.push_str(&format!(" address {}", format_mac(&mac)));
        }
        match &change.master {
            Some(Some(m)) => what.push_str(&format!(" master {m}")),
            Some(None) => what.push_str(" nomaster"),
            None => {}
        }
        match change.up {
            Some(true) => what.push_str(" up"),
            Some(false) => what.push_str(" down"),
            None => {}
        }
        self.change(what, |state| {
            let ns = self.ns(state);
            let master = match &change.master {
                Some(Some(bridge)) => {
                    let b = ns.find(bridge)?;
                    if b.link.kind.as_deref() != Some("bridge") {
                        return Err(Error::Conflict(format!("{bridge} is not a bridge")));
                    }
                    Some(Some(b.link.index))
                }
                Some(None) => Some(None),
                None => None,
            };
            let link = ns.find_mut(name)?;
            if let Some(mtu) = change.mtu {
                link.link.mtu = mtu;
            }
            if let Some(up) = change.up {
                link.link.up = up;
            }
            if let Some(mac) = change.mac {
                link.link.mac = Some(mac);
            }
            if let Some(master) = master {
                link.link.master = master;
                // A new bridge port starts with hairpin off, as in Linux.
                link.link.hairpin = master.map(|_| false);
            }
            Ok(())
        })
    }

    fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let what = format!("set hairpin {name} {}", if on { "on" } else { "off" });
        self.change(what, |state| {
            let link = self.ns(state).find_mut(name)?;
            if link.link.master.is_none() {
                return Err(Error::Conflict(format!("{name} is not a bridge port")));
            }
            link.link.hairpin = Some(on);
            Ok(())
        })
    }

    fn addresses(&self, name: &str) -> Result<Vec<IpNet>> {
        self.with(|ns| Ok(ns.find(name)?.addresses.clone()))
    }

    fn add_address(&self, name: &str, addr: IpNet) -> Result<()> {
        self.change(format!("add address {addr} dev {name}"), |state| {
            let ns = self.ns(state);
            let link = ns.find_mut(name)?;
            if link.addresses.contains(&addr) {
                return Err(Error::Conflict(format!("{addr} exists on {name} (EEXIST)")));
            }
            link.addresses.push(addr);
            if let IpNet::V4(v4) = addr {
                ns.routes.push(Route {
                    dst: v4.trunc(),
                    via: None,
                    dev: Some(name.to_string()),
                    proto: PROTO_KERNEL,
                });
            }
            Ok(())
        })
    }

    fn delete_address(&self, name: &str, addr: IpNet) -> Result<()> {
        self.change(format!("delete address {addr} dev {name}"), |state| {
            let ns = self.ns(state);
            let link = ns.find_mut(name)?;
            link.addresses.retain(|a| *a != addr);
            if let IpNet::V4(v4) = addr {
                let subnet = v4.trunc();
                ns.routes.retain(|r| {
                    !(r.proto == PROTO_KERNEL && r.dst == subnet && r.dev.as_deref() == Some(name))
                });
            }
            Ok(())
        })
    }

    fn routes(&self) -> Result<Vec<Route>> {
        self.with(|ns| Ok(ns.routes.clone()))
    }

    fn add_route(&self, route: &Route) -> Result<()> {
        self.change(format!("add route {route}"), |state| {
            let ns = self.ns(state);
            if let Some(dev) = &route.dev {
                let link = ns.find(dev)?;
                // Like Linux: a gateway must be reachable on the device.
                if let Some(via) = route.via {
                    let on_link = link.addresses.iter().any(|a| match a {
                        IpNet::V4(v4) => v4.contains(&via),
                        IpNet::V6(_) => false,
                    });
                    if !on_link || !link.link.up {
                        return Err(Error::Conflict(format!(
                            "gateway {via} not reachable on {dev} (ENETUNREACH)"
                        )));
                    }
                }
            }
            if ns.routes.iter().any(|r| r.dst == route.dst) {
                return Err(Error::Conflict(format!(
                    "route to {} exists (EEXIST)",
                    route.dst
                )));
            }
            ns.routes.push(route.clone());
            Ok(())
        })
    }

    fn delete_route(&self, route: &Route) -> Result<()> {
        self.change(format!("delete route {route}"), |state| {
            self.ns(state).routes.retain(|r| r != route);
            Ok(())
        })
    }

    fn sysctl(&self, key: &str) -> Result<Option<String>> {
        check_sysctl_key(key)?;
        self.with(|ns| Ok(ns.sysctls.get(key).cloned()))
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        check_sysctl_key(key)?;
        self.change(format!("sysctl {key}={value}"), |state| {
            let ns = self.ns(state);
            match ns.sysctls.get_mut(key) {
                Some(v) => {
                    *v = value.to_string();
                    Ok(())
                }
                None => Err(Error::Conflict(format!("no sysctl {key} (ENOENT)"))),
            }
        })
    }
}

/// A locally administered address that differs per link.
fn fake_mac(index: u32) -> [u8; 6] {
    let [a, b, c, d] = index.to_be_bytes();
    [0x02, 0xfa, a, b, c, d]
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The [`Netns`] view of a [`FakeKernel`].
#[derive(Clone, Debug)]
pub struct FakeNetns {
    kernel: FakeKernel,
}

impl Netns for FakeNetns {
    type Handle = FakeNetlink;

    fn create(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let mut state = self.kernel.lock();
        let made = FakeKernel::make_namespace(&mut state, name);
        if made {
            state.log.push(format!("netns add {name}"));
        }
        Ok(made)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        Ok(self.kernel.lock().namespaces.contains_key(name))
    }

    fn delete(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let mut state = self.kernel.lock();
        let Some(ns) = state.namespaces.remove(name) else {
            return Ok(false);
        };
        // The namespace's veths die with it, and so do their peers.
        for link in ns.links {
            if let (Some(peer_ns), Some(peer)) = (link.peer_ns, link.link.peer_index)
                && let Some(other) = state.namespaces.get_mut(&peer_ns)
            {
                other.remove_link(peer);
            }
        }
        state.log.push(format!("netns delete {name}"));
        Ok(true)
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(self.kernel.namespaces())
    }

    fn open(&self, name: &str) -> Result<FakeNetlink> {
        if !self.exists(name)? {
            return Err(Error::NoNamespace(name.to_string()));
        }
        Ok(self.kernel.netlink(name))
    }
}
