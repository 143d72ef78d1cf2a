//! knit's node agent, the kernel-facing half: what a kubelet plus a bridge
//! CNI plugin do for the article's pod network.
//!
//! The crate is split the way DESIGN.md asks for OS-facing code:
//!
//! - [`netlink`]: the [`Netlink`](netlink::Netlink) trait (links, addresses,
//!   routes, link attributes, namespace sysctls) with a Linux implementation
//!   over rtnetlink that runs on a thread inside one network namespace, and
//!   a recording in-memory fake for plan tests.
//! - [`netns`]: named network namespaces held open by bind mounts under
//!   `/run/netns` (so `ip netns exec` works on them), behind the
//!   [`Netns`](netns::Netns) trait, plus [`netns::run_in`] to run a closure
//!   on a thread inside a namespace.
//! - [`sandbox`]: the functional core ([`sandbox::node_network`],
//!   [`sandbox::pod_sandbox`]) that turns a node's pod CIDR and a pod into
//!   plain-data plans, and the appliers that make the kernel match them.
//!
//! - [`containers`]: the [`Containers`](containers::Containers) trait, the
//!   boundary between the agent's loop and the process runtime.
//! - [`proxy`]: the service dataplane, kube-proxy's job: Services and
//!   EndpointSlices planned, one service at a time, into one nftables
//!   table `ip knit` (O(1) dispatch maps, endpoints as map elements picked
//!   at random, policies, affinity, masquerading) and applied as one `nft`
//!   transaction per sync, with drift repair and UDP conntrack cleanup.
//! - [`dns`]: cluster DNS, answered by every agent for its own pods on the
//!   `kube-dns` address from an index of Services and EndpointSlices.
//! - [`runtime`]: [`ProcessRuntime`](runtime::ProcessRuntime), which runs
//!   containers as processes in their pod's namespaces (restarts, back-off,
//!   CRI-format logs, re-adoption after an agent restart), and [`probe`]:
//!   startup, liveness and readiness probes.
//!
//! [`agent`] is where the API comes in: its watch loop drives these pieces
//! for the pods bound to the node — `pod_sandbox` + `apply_sandbox` (under
//! `spawn_blocking`, a few at a time, with one long-lived
//! [`LinuxNetlink::current`](netlink::LinuxNetlink::current) handle for
//! the node), the runtime, `remove_sandbox` when a pod goes, and at start a
//! sweep of [`Netns::list`](netns::Netns::list) through
//! [`SandboxNames::uid_of`](sandbox::SandboxNames::uid_of) to remove the
//! sandboxes of pods that no longer exist — and its `services` module and
//! [`dns`] keep their own watches of Services and EndpointSlices.

pub mod agent;
pub mod containers;
pub mod dns;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod probe;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod sandbox;

pub use error::{Error, Result};
